import fp from 'fastify-plugin'
import rateLimit, { normalizeIP } from '@fastify/rate-limit'
import { Redis } from 'ioredis'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { AppError } from '../errors.js'
import { createResilientRedisStore, limiterKey, type LimiterHealth, type PairResult } from '../infra/rate-limit-store.js'
import { createRefusedTokens } from '../infra/refused-tokens.js'
import { CHANGE_TYPES } from '../services/entitlements.js'
import { bearerToken } from '../infra/http.js'

declare module 'fastify' {
  interface FastifyInstance {
    limiterHealth: LimiterHealth
    /**
     * Wrong cron secrets per client IP: `check` refuses once the budget is spent (before the
     * secret is compared, so a spent budget tells a guesser nothing), `failed` counts one.
     */
    cronSecretLimit: {
      check(request: FastifyRequest, reply: FastifyReply): Promise<void>
      failed(request: FastifyRequest, reply: FastifyReply): Promise<void>
    }
  }
  interface FastifyContextConfig {
    /** false: this tenant route is not counted against the tenant's api_requests_per_minute. */
    tenantRateLimit?: boolean
  }
}

interface Window { policy: string, limit: number, remaining: number, resetS: number, windowS: number }

const TENANT_WINDOW_MS = 60_000
const CRON_WINDOW_MS = 60_000
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
 * maximum from the tenant's api_requests_per_minute entitlement, and per user a share of it;
 * 3) wrong cron secrets per IP (failed logins are counted in Postgres, services/login-throttle.ts). Every key is limiterKey(kind, …), so
 * no kind can spend another's budget. In memory by default; with REDIS_URL shared by the
 * cluster through one Redis round trip per decision, degrading (never failing) when Redis is down.
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

  const RedisStore = redis ? createResilientRedisStore({ redis, log, health }) : undefined
  // The user's share and its tenant's budget in one Redis round trip (incrPair).
  const pairStore = RedisStore ? new RedisStore() : undefined
  await fastify.register(rateLimit, {
    global: true,
    max: config.RATE_LIMIT_MAX,
    timeWindow: config.RATE_LIMIT_WINDOW,
    skipOnError: true,
    keyGenerator: (request) => limiterKey('ip', normalizeIP(request.ip)),
    ...(RedisStore ? { store: RedisStore } : {}),
    // The window is the route's (context.after is the time left, not the window).
    errorResponseBuilder: (request, context) =>
      new AppError('RATE_LIMITED', `rate limit of ${context.max} requests per ${Math.round(ipWindowMs(request) / 1000)} s exceeded; ` +
        `retry in ${Math.ceil(context.ttl / 1000)} s`)
  })

  // Both take their maximum from request.tenantBudget, read once per request below.
  const tenantLimit = fastify.createRateLimit({
    keyGenerator: (request) => limiterKey('tenant', request.tenant!.id),
    max: (request) => request.tenantBudget,
    timeWindow: TENANT_WINDOW_MS
  })
  const userLimit = fastify.createRateLimit({
    keyGenerator: (request) => limiterKey('user', request.tenant!.id, request.auth!.userId),
    max: (request) => userShareOf(request.tenantBudget),
    timeWindow: TENANT_WINDOW_MS
  })
  /** The per-IP window of the request's route: its own, or RATE_LIMIT_WINDOW. */
  function ipWindowMs (request: FastifyRequest): number {
    const perIp = request.routeOptions.config.rateLimit
    return typeof perIp === 'object' && typeof perIp.timeWindow === 'number' ? perIp.timeWindow : config.RATE_LIMIT_WINDOW
  }
  /** A counted window in the shape @fastify/rate-limit reports it. */
  const windowResult = ({ current, ttl }: { current: number, ttl: number }, max: number) => ({
    isAllowed: false as const,
    key: '',
    max,
    timeWindow: TENANT_WINDOW_MS,
    remaining: Math.max(0, max - current),
    ttl,
    ttlInSeconds: Math.ceil(ttl / 1000),
    isExceeded: current > max,
    isBanned: false
  })
  /** One user's share of a tenant budget: at least one request, so a tiny budget stays usable. */
  const userShareOf = (budget: number) => Math.max(1, Math.floor(budget * config.TENANT_RATE_LIMIT_USER_SHARE / 100))
  const cronFailures = fastify.createRateLimit({
    keyGenerator: (request) => limiterKey('cron', normalizeIP(request.ip)),
    max: config.CRON_AUTH_FAILURES_PER_MINUTE,
    timeWindow: CRON_WINDOW_MS,
    strictFallbackMax: config.CRON_AUTH_FAILURES_PER_MINUTE
  } as Parameters<typeof fastify.createRateLimit>[0])
  // No per-account request limit here: one keyed by the email alone let anyone block the
  // owner's login by sending wrong passwords. Credential checks are limited per (account,
  // client) and per account in Postgres instead (services/login-throttle.ts).

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
    throw new AppError('RATE_LIMITED',
      `the ${window.policy} limit of ${window.limit} requests per ${window.windowS} s is spent; retry in ${window.resetS} s`,
      { headers: { 'retry-after': String(window.resetS) } })
  }

  async function enforce (reply: FastifyReply, policy: 'tenant' | 'user' | 'cron', result: Awaited<ReturnType<typeof tenantLimit>>) {
    if (result.isAllowed) return
    const window: Window = {
      policy, limit: result.max, remaining: result.remaining, resetS: result.ttlInSeconds, windowS: Math.round(result.timeWindow / 1000)
    }
    if (!result.isExceeded) {
      record(reply.request, window)
      return
    }
    const { tenant } = reply.request
    if ((policy === 'tenant' || policy === 'user') && tenant) {
      const token = bearerToken(reply.request.headers.authorization)
      if (token) {
        refused.remember(token, {
          policy, tenantId: tenant.id, resetAt: Date.now() + result.ttl, limit: result.max, windowS: window.windowS
        })
      }
    }
    refuse(reply.request, window)
  }

  fastify.addHook('onRequest', async (request) => {
    if (refused.size === 0 || request.is404) return
    const { auth = 'tenant', tenantRateLimit } = request.routeOptions.config
    if (auth !== 'tenant' || tenantRateLimit === false) return
    const token = bearerToken(request.headers.authorization)
    const refusal = token ? refused.lookup(token) : null
    if (!refusal) return
    refuse(request, {
      policy: refusal.policy,
      limit: refusal.limit,
      remaining: 0,
      resetS: Math.max(1, Math.ceil((refusal.resetAt - Date.now()) / 1000)),
      windowS: refusal.windowS
    })
  })

  // After auth (an app-level preParsing hook registered earlier): one tenant's flood only
  // spends that tenant's budget, and one user's only its share of it. The user's share is
  // decided first, so requests refused by it never spend the tenant's budget; with Redis both
  // are one round trip (incrPair). An unlimited tenant has no share to enforce.
  fastify.addHook('preParsing', async (request, reply) => {
    if (!request.tenant || request.routeOptions.config.tenantRateLimit === false) return
    const d = await entitlements.check(request.tenant.id, 'api_requests_per_minute', request.withTenant)
    const budget = request.tenantBudget = d.allowed ? d.limit ?? UNLIMITED : 0
    // Nothing to count, and no window to report (a quota of 2^53 - 1 is no Structured Field
    // integer, which has 15 digits at most).
    if (budget === UNLIMITED) return
    if (budget === 0 || config.TENANT_RATE_LIMIT_USER_SHARE === 100) {
      await enforce(reply, 'tenant', await tenantLimit(request))
      return
    }
    if (!pairStore) {
      await enforce(reply, 'user', await userLimit(request))
      await enforce(reply, 'tenant', await tenantLimit(request))
      return
    }
    const userMax = userShareOf(budget)
    const pair = await new Promise<PairResult | null>((resolve) => pairStore.incrPair(
      limiterKey('user', request.tenant!.id, request.auth!.userId), limiterKey('tenant', request.tenant!.id),
      TENANT_WINDOW_MS, userMax, (err, result) => resolve(err ? null : result!)))
    if (!pair) return // Redis could not answer: fail open, as every general decision does
    await enforce(reply, 'user', windowResult(pair.first, userMax))
    if (pair.second) await enforce(reply, 'tenant', windowResult(pair.second, budget))
  })

  fastify.decorate('cronSecretLimit', {
    async check (request: FastifyRequest, reply: FastifyReply) {
      const result = await cronFailures(request, { increment: false })
      if (!result.isAllowed && result.remaining === 0) await enforce(reply, 'cron', { ...result, isExceeded: true })
    },
    async failed (request: FastifyRequest, reply: FastifyReply) {
      await enforce(reply, 'cron', await cronFailures(request))
    }
  })

  fastify.decorateRequest('rateLimitWindows', null)
  fastify.decorateRequest('tenantBudget', 0)
  fastify.addHook('onSend', (request, reply, payload, done) => {
    const windows: Window[] = []
    const limit = reply.getHeader('x-ratelimit-limit')
    if (limit !== undefined) {
      const resetS = Number(reply.getHeader('x-ratelimit-reset') ?? 0)
      const windowMs = ipWindowMs(request)
      windows.push({
        policy: 'ip',
        limit: Number(limit),
        remaining: Number(reply.getHeader('x-ratelimit-remaining') ?? 0),
        resetS,
        windowS: Math.round(windowMs / 1000)
      })
    }
    if (request.rateLimitWindows) windows.push(...request.rateLimitWindows)
    if (windows.length) setDraftHeaders(reply, windows)
    done(null, payload)
  })
}, { name: 'rate-limit', dependencies: ['config', 'error-handler', 'entitlements', 'tenant-context'], fastify: '5.x' })

declare module 'fastify' {
  interface FastifyRequest {
    rateLimitWindows: Window[] | null
    /** The tenant's api_requests_per_minute for this request (0: refused; MAX_SAFE_INTEGER: unlimited). */
    tenantBudget: number
  }
}
