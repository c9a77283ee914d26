import fp from 'fastify-plugin'
import { databaseUrls } from '../config.js'
import { isConnectionRefused } from '../errors.js'
import { loadMigrations } from '../db/migrate.js'
import { createReadiness, type Readiness } from '../infra/readiness.js'
import { databaseChecks } from '../infra/database-checks.js'

declare module 'fastify' {
  interface FastifyInstance {
    readiness: Readiness
  }
}

/**
 * Readiness. The checks run once before the app is ready and then on an interval; a failed
 * check never stops the process (liveness stays 200), it only makes readiness answer 503.
 */
export default fp(async (fastify) => {
  const { config, log } = fastify
  const envelope = createReadiness(log)
  const checks = databaseChecks({
    pool: fastify.db.pool,
    poolMax: config.DB_MAX_CONNECTIONS,
    migrations: await loadMigrations(),
    migrateWith: config.MIGRATE_ON_BOOT ? databaseUrls(config).migration : undefined,
    context: { signer: fastify.db.context, ownerUrl: databaseUrls(config).migration },
    log
  })
  for (const check of checks) envelope.addCheck(check)
  fastify.decorate('readiness', envelope)

  // The first round runs in the background: the port opens (liveness answers) even while a
  // migration by another replica holds the lock or the database is still coming up.
  fastify.addHook('onReady', async () => {
    envelope.refresh().catch(() => {})
    envelope.start(config.READINESS_CHECK_INTERVAL_MS)
  })

  // A request refused a connection is news readiness should not wait a round for: under
  // load the checks queue for the pool behind the requests, and a short outage (a restart)
  // can pass between two rounds while every request fails. One killed backend or a full
  // pool does not count: they say nothing about whether the database is up.
  fastify.addHook('onError', async (_request, _reply, error) => {
    if (isConnectionRefused(error)) envelope.fail('database', error)
  })

  // Once close has begun, readiness reports draining and every response closes its
  // connection: the requests in flight finish, and an idle keep-alive socket cannot hold
  // the server open for the whole keep-alive timeout (72 s) after them.
  let closing = false
  fastify.addHook('preClose', (done) => {
    closing = true
    envelope.drain()
    done()
  })
  fastify.addHook('onSend', (_request, reply, payload, done) => {
    if (closing) reply.header('connection', 'close')
    done(null, payload)
  })
  fastify.addHook('onClose', async () => {
    envelope.stop()
    log.info({ closed: 'readiness' }, 'readiness checks stopped')
  })
}, { name: 'readiness', dependencies: ['config', 'db'], fastify: '5.x' })
