import fp from 'fastify-plugin'
import rateLimit from '@fastify/rate-limit'
import { Redis } from 'ioredis'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { AppError } from '../errors.js'
import { notFoundHandler } from './error-handler.js'
import { createResilientRedisStore, type LimiterHealth } from '../services/rate-limit-store.js'
import { createRefusedTokens } from '../services/refused-tokens.js'
import { CHANGE_TYPES } from '../services/entitlements.js'
import { bearerToken } from './auth.js'

declare module 'fastify' {
  interface FastifyInstance {
    limiterHealth: LimiterHealth
    /** A per-account limiter for credential routes (keyed by the normalised email). */
    accountRateLimit(request: FastifyRequest, reply: FastifyReply): Promise<void>
  }
  interface FastifyContextConfig {
    /** false: this tenant route is not counted against the tenant's api_requests_per_minute. */
    tenantRateLimit?: boolean
  }
}

interface Window { policy: string, limit: number, remaining: number, resetS: number, windowS: number }

const TENANT_WINDOW_MS = 60_000
const UNLIMITED = Number.MAX_SAFE_INTEGER

// The IETF draft's fields (draft-ietf-httpapi-ratelimit-headers): every policy that applied,
// and the quota left under each.
function setDraftHeaders (reply: FastifyReply, windows: Window[]) {
  reply.header('ratelimit-policy', windows.map(w => `"${w.policy}";q=${w.limit};w=${w.windowS}`).join(', '))
  reply.header('ratelimit', windows.map(w => `"${w.policy}";r=${w.remaining};t=${w.resetS}`).join(', '))
}

/**
 * Rate limits. 1) per client IP on every route but the probes (onRequest, @fastify/rate-limit,
 * stricter on credential routes, 404s counted too); 2) per tenant after authentication, its
 * maximum from the tenant's api_requests_per_minute entitlement; 3) per account on login.
 * In memory by default; with REDIS_URL shared by the cluster through one Redis round trip per
 * decision, degrading (never failing) when Redis is down.
 */
export default fp(async (fastify) => {
  const { config, log, entitlements } = fastify
  const health: LimiterHealth = { redisUp: true, outages: 0, failOpens: 0, fallbacks: 0 }
  fastify.decorate('limiterHealth', health)

  let redis: Redis | undefined
  if (config.REDIS_URL) {
    redis = new Redis(config.REDIS_URL, {
      // Never queue or retry a decision: a request waits at most the command timeout.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: config.REDIS_COMMAND_TIMEOUT_MS,
      connectTimeout: 1000,
      retryStrategy: (times) => Math.min(times * 100, 1000)
    })
    redis.on('error', (err) => log.debug({ err: { message: err.message } }, 'redis client error'))
    fastify.addHook('onClose', async () => {
      await redis!.quit().catch(() => redis!.disconnect())
      log.info({ closed: 'redis' }, 'redis client closed')
    })
  }

  await fastify.register(rateLimit, {
    global: true,
    max: config.RATE_LIMIT_MAX,
    timeWindow: config.RATE_LIMIT_WINDOW,
    skipOnError: true,
    ...(redis ? { store: createResilientRedisStore({ redis, log, health }) } : {}),
    errorResponseBuilder: (_request, context) =>
      new AppError('RATE_LIMITED', `rate limit of ${context.max} requests per ${context.after} exceeded; retry in ${Math.ceil(context.ttl / 1000)} s`)
  })
  // 404 floods count against the per-IP limit too.
  fastify.setNotFoundHandler({ preHandler: fastify.rateLimit() }, notFoundHandler)

  const tenantLimit = fastify.createRateLimit({
    keyGenerator: (request) => `tenant:${request.tenant!.id}`,
    max: async (request) => {
      const d = await entitlements.check(request.tenant!.id, 'api_requests_per_minute', request.withTenant)
      return d.allowed ? d.limit ?? UNLIMITED : 0
    },
    timeWindow: TENANT_WINDOW_MS
  })
  const accountLimit = fastify.createRateLimit({
    keyGenerator: (request) => `account:${String((request.body as { email?: unknown } | undefined)?.email ?? '').trim().toLowerCase()}`,
    max: config.AUTH_RATE_LIMIT_MAX,
    timeWindow: config.AUTH_RATE_LIMIT_WINDOW_MS,
    strictFallbackMax: config.AUTH_RATE_LIMIT_FALLBACK_MAX
  } as Parameters<typeof fastify.createRateLimit>[0])

  // A token whose tenant window is spent is refused again before auth looks it up, until the
  // window resets (services/refused-tokens.ts). A change of the tenant's entitlements, here or
  // relayed by the broadcast, forgets its refusals: a raised limit applies at once.
  const refused = createRefusedTokens()
  for (const type of CHANGE_TYPES) entitlements.events.on(type, (change: { tenantId: string }) => refused.forgetTenant(change.tenantId))
  /** Puts a window in the response's RateLimit headers. */
  function record (request: FastifyRequest, window: Window) {
    const windows = request.rateLimitWindows ?? []
    windows.push(window)
    request.rateLimitWindows = windows
  }
  function refuse (request: FastifyRequest, window: Window): never {
    record(request, window)
    throw new AppError('RATE_LIMITED', `the ${window.policy} limit of ${window.limit} requests per ${window.windowS} s is spent; retry in ${window.resetS} s`,
      { headers: { 'retry-after': String(window.resetS) } })
  }

  async function enforce (reply: FastifyReply, policy: string, result: Awaited<ReturnType<typeof tenantLimit>>) {
    if (result.isAllowed) return
    const window: Window = { policy, limit: result.max, remaining: result.remaining, resetS: result.ttlInSeconds, windowS: Math.round(result.timeWindow / 1000) }
    if (!result.isExceeded) {
      record(reply.request, window)
      return
    }
    const { tenant } = reply.request
    const token = policy === 'tenant' && tenant ? bearerToken(reply.request) : null
    if (token) refused.remember(token, { tenantId: tenant!.id, resetAt: Date.now() + result.ttl, limit: result.max, windowS: window.windowS })
    refuse(reply.request, window)
  }

  fastify.addHook('onRequest', async (request) => {
    if (refused.size === 0 || request.is404) return
    const { auth = 'tenant', tenantRateLimit } = request.routeOptions.config
    if (auth !== 'tenant' || tenantRateLimit === false) return
    const token = bearerToken(request)
    const refusal = token ? refused.lookup(token) : null
    if (!refusal) return
    refuse(request, { policy: 'tenant', limit: refusal.limit, remaining: 0, resetS: Math.max(1, Math.ceil((refusal.resetAt - Date.now()) / 1000)), windowS: refusal.windowS })
  })

  // After auth (an app-level preParsing hook registered earlier): one tenant's flood only
  // spends that tenant's budget.
  fastify.addHook('preParsing', async (request, reply) => {
    if (!request.tenant || request.routeOptions.config.tenantRateLimit === false) return
    await enforce(reply, 'tenant', await tenantLimit(request))
  })
  fastify.decorate('accountRateLimit', async (request: FastifyRequest, reply: FastifyReply) => {
    await enforce(reply, 'account', await accountLimit(request))
  })

  fastify.decorateRequest('rateLimitWindows', null)
  fastify.addHook('onSend', (request, reply, payload, done) => {
    const windows: Window[] = []
    const limit = reply.getHeader('x-ratelimit-limit')
    if (limit !== undefined) {
      const resetS = Number(reply.getHeader('x-ratelimit-reset') ?? 0)
      const perIp = request.routeOptions.config.rateLimit
      const windowMs = typeof perIp === 'object' && typeof perIp.timeWindow === 'number' ? perIp.timeWindow : config.RATE_LIMIT_WINDOW
      windows.push({ policy: 'ip', limit: Number(limit), remaining: Number(reply.getHeader('x-ratelimit-remaining') ?? 0), resetS, windowS: Math.round(windowMs / 1000) })
    }
    if (request.rateLimitWindows) windows.push(...request.rateLimitWindows)
    if (windows.length) setDraftHeaders(reply, windows)
    done(null, payload)
  })
}, { name: 'rate-limit', dependencies: ['config', 'error-handler', 'entitlements', 'tenant-context'], fastify: '5.x' })

declare module 'fastify' {
  interface FastifyRequest {
    rateLimitWindows: Window[] | null
  }
}
