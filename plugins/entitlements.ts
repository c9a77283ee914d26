import { randomUUID } from 'node:crypto'
import fp from 'fastify-plugin'
import type { FastifyRequest } from 'fastify'
import { AppError } from '../errors.js'
import { createEntitlementEngine, type EntitlementEngine, type FeatureKey } from '../services/entitlements.js'

declare module 'fastify' {
  interface FastifyInstance {
    entitlements: EntitlementEngine
    /** This process's per-boot token, stamped on every change it broadcasts. */
    originToken: string
    /** A preHandler that lets the request through only if its tenant has `feature`. */
    requireFeature(feature: FeatureKey): (request: FastifyRequest) => Promise<void>
  }
}

/** The entitlement engine (in-process ALLOW cache) and the requireFeature gate. */
export default fp(async (fastify) => {
  const { config } = fastify
  const engine = createEntitlementEngine({
    db: fastify.db,
    ttlMs: config.ENTITLEMENT_CACHE_TTL_MS,
    graceMs: config.PAST_DUE_GRACE_DAYS * 86_400_000
  })
  fastify.decorate('entitlements', engine)
  fastify.decorate('originToken', randomUUID())
  fastify.decorate('requireFeature', (feature: FeatureKey) => async function (request: FastifyRequest) {
    if (!request.tenant) throw new AppError('TENANT_FORBIDDEN', 'this route needs a session in a tenant')
    const decision = await engine.check(request.tenant.id, feature, request.withTenant)
    if (!decision.allowed) throw new AppError('ENTITLEMENT_DENIED', `${feature}: ${decision.reason}`)
  })
}, { name: 'entitlements', dependencies: ['config', 'db', 'tenant-context'], fastify: '5.x' })
