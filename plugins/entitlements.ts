import fp from 'fastify-plugin'
import type { FastifyRequest } from 'fastify'
import { AppError } from '../errors.js'
import { lifecycleRule, type FeatureKey, type LifecycleRule } from '../services/entitlements.js'

export interface LifecycleRoute {
  method: string, url: string, readonly auth: 'tenant' | 'operator' | 'session' | false, rule: LifecycleRule
}

declare module 'fastify' {
  interface FastifyInstance {
    /** A preHandler that lets the request through only if its tenant has `feature`. */
    requireFeature(feature: FeatureKey): (request: FastifyRequest) => Promise<void>
    /** Every route declared after this plugin, with the lifecycle rule its tenant requests are held to. */
    lifecycleRoutes: readonly LifecycleRoute[]
  }
  interface FastifyContextConfig {
    /**
     * What a tenant's lifecycle allows here (docs/entitlements.md, "Writes"). Unset: GET/HEAD
     * are reads (every state); any other method is a write, refused while the tenant is
     * suspended or cancelled, unless a requireFeature gate governs it. 'read' is for a POST
     * that changes nothing; 'write' holds a feature-gated route to the write rule as well.
     */
    lifecycle?: 'read' | 'write'
  }
}

type Hook = unknown
const hooksOf = (value: Hook | Hook[] | undefined): Hook[] => value === undefined ? [] : Array.isArray(value) ? value : [value]

/** The entitlement engine (in-process ALLOW cache), the requireFeature gate and the lifecycle's write guard. */
export default fp(async (fastify) => {
  const engine = fastify.entitlements
  // Each gate remembers its feature, so that a route can be seen to be governed by it.
  const gates = new WeakMap<object, FeatureKey>()
  fastify.decorate('requireFeature', (feature: FeatureKey) => {
    const gate = async function (request: FastifyRequest) {
      if (!request.tenant) throw new AppError('TENANT_FORBIDDEN', 'this route needs a session in a tenant')
      const decision = await engine.check(request.tenant.id, feature, request.withTenant)
      if (!decision.allowed) throw new AppError('ENTITLEMENT_DENIED', `${feature}: ${decision.reason}`)
    }
    gates.set(gate, feature)
    return gate
  })

  // Every route's rule is fixed when it is declared, so a write added later is guarded without
  // anyone remembering to: the default for anything but GET/HEAD is 'write'.
  const routes: LifecycleRoute[] = []
  const rules = new Map<string, LifecycleRule>()
  fastify.decorate('lifecycleRoutes', routes)
  fastify.addHook('onRoute', (route) => {
    const found = [route.onRequest, route.preParsing, route.preValidation, route.preHandler]
      .flatMap(h => hooksOf(h)).map(h => typeof h === 'function' ? gates.get(h) : undefined).filter(f => f !== undefined)
    for (const method of [route.method].flat()) {
      let rule: LifecycleRule
      try {
        rule = lifecycleRule(method, route.config?.lifecycle, found)
      } catch (err) {
        throw new Error(`${method} ${route.url}: ${(err as Error).message}`)
      }
      // Read when asked: a later onRoute hook may still set the route's auth (openapi's /docs).
      routes.push({ method, url: route.url, get auth () { return route.config?.auth ?? 'tenant' }, rule })
      rules.set(`${method} ${route.url}`, rule)
    }
  })

  // After the per-tenant rate limit (preParsing), so a suspended tenant's flood of refused
  // writes is bounded like any other; before the route's own preValidation and handler.
  // Only 'tenant' routes act on the tenant: a session route (logout, the caller's own sessions
  // and password) acts on the account, and goes on whatever its tenant's lifecycle.
  fastify.addHook('preValidation', async (request) => {
    if (!request.tenant) return
    const { url, config: routeConfig } = request.routeOptions
    if ((routeConfig.auth ?? 'tenant') !== 'tenant') return
    // A route this plugin did not see (declared before it) gets the default, which is the strict one.
    const rule = rules.get(`${request.method} ${url}`) ?? lifecycleRule(request.method, undefined, [])
    if (rule !== 'write') return
    const decision = await engine.checkWrites(request.tenant.id, request.withTenant)
    if (!decision.allowed) throw new AppError('ENTITLEMENT_DENIED', decision.reason)
  })
}, { name: 'entitlements', dependencies: ['config', 'services', 'tenant-context'], fastify: '5.x' })
