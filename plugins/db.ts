import { randomBytes } from 'node:crypto'
import fp from 'fastify-plugin'
import fastifyPostgres from '@fastify/postgres'
import { databaseUrls, queryTimeoutMs } from '../config.js'
import { createDatabase, type Database } from '../infra/database.js'
import { createContextSigner } from '../infra/request-context.js'
import { capTenantCheckouts, createTenantSlots, tenantMaxConnections, type TenantSlots } from '../infra/tenant-slots.js'

declare module 'fastify' {
  interface FastifyInstance {
    db: Database
    /** Each tenant's share of the pool, counted per checkout (services/tenant-slots.ts). */
    tenantSlots: TenantSlots
    /** A short id of this app instance (connection names, job run records). */
    instanceId: string
  }
}

/** The pg pool (through @fastify/postgres, which ends it on close) and the transaction helpers. */
export default fp(async (fastify) => {
  const { config, log } = fastify
  fastify.decorate('instanceId', randomBytes(4).toString('hex'))
  // Registered before @fastify/postgres so that, onClose running in reverse, it runs after
  // the pool has ended: this line is the last word of a clean shutdown.
  fastify.addHook('onClose', async () => { log.info({ closed: 'db' }, 'database pool closed') })

  await fastify.register(fastifyPostgres, {
    connectionString: databaseUrls(config).runtime,
    max: config.DB_MAX_CONNECTIONS,
    idleTimeoutMillis: config.DB_IDLE_TIMEOUT,
    connectionTimeoutMillis: config.DB_CONNECTION_TIMEOUT,
    statement_timeout: config.DB_STATEMENT_TIMEOUT || undefined,
    // The client-side bound: a slow or stalled network is not something statement_timeout sees.
    query_timeout: queryTimeoutMs(config) || undefined,
    // TCP keepalive finds a peer that vanished without a FIN (a dead host, a dropped NAT entry).
    keepAlive: true,
    // One name per instance: the pool-sizing check counts replicas by it.
    application_name: `govula-core:${fastify.instanceId}`
  })
  const pool = fastify.pg.pool
  // Without these listeners a backend killed under an idle or checked-out client would emit
  // an unhandled 'error' and take the process down; the failed query still rejects normally.
  pool.on('error', (err) => log.warn({ err }, 'idle database client failed'))
  pool.on('connect', (client) => client.on('error', (err) => log.warn({ err }, 'database client failed')))

  const tenantSlots = createTenantSlots({
    max: tenantMaxConnections(config),
    queueTimeoutMs: config.DB_TENANT_QUEUE_TIMEOUT_MS ?? config.DB_CONNECTION_TIMEOUT
  })
  fastify.decorate('tenantSlots', tenantSlots)
  // The signer's key is read by the readiness check 'request-context' (plugins/readiness.ts).
  fastify.decorate('db', capTenantCheckouts(createDatabase(pool, createContextSigner()), tenantSlots))
}, { name: 'db', dependencies: ['config'], fastify: '5.x' })
