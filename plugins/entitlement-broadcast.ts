import fp from 'fastify-plugin'
import { databaseUrls } from '../config.js'
import { CheckFailure } from '../infra/readiness.js'
import { createBroadcastListener, type BroadcastState } from '../infra/entitlement-broadcast.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The listener's state (null when broadcast is off): for readiness, metrics and tests. */
    entitlementBroadcast: BroadcastState | null
  }
}

/**
 * Cross-replica invalidation over LISTEN/NOTIFY, opt-in (ENTITLEMENT_BROADCAST_ENABLED).
 * Never fatal: a listener that cannot connect logs a warning, keeps retrying, and the
 * engine degrades to its TTL. Registered after the pool, so it closes before it.
 */
export default fp(async (fastify) => {
  const { config, log, entitlements } = fastify
  fastify.decorate('entitlementBroadcast', null)
  if (!config.ENTITLEMENT_BROADCAST_ENABLED) return
  const listener = createBroadcastListener({
    connectionString: databaseUrls(config).direct,
    originToken: fastify.originToken,
    onChange: (type, tenantId) => entitlements.emitChange(type, tenantId),
    onConnect: () => entitlements.invalidateAll(),
    log
  })
  fastify.entitlementBroadcast = listener.state
  fastify.readiness.addCheck({
    name: 'entitlement-broadcast',
    critical: false,
    async run () {
      // A stable detail: one log line per outage, not per attempt.
      if (!listener.state.connected) throw new CheckFailure('degraded: not listening, reconnecting; entitlement caches expire by TTL')
      return `listening (${listener.state.reconnects} reconnects)`
    }
  })
  fastify.addHook('onReady', async () => { listener.start().catch(() => {}) })
  fastify.addHook('onClose', async () => {
    await listener.stop()
    log.info({ closed: 'entitlement-broadcast' }, 'entitlement broadcast listener closed')
  })
}, { name: 'entitlement-broadcast', dependencies: ['config', 'db', 'readiness', 'entitlements'], fastify: '5.x' })
