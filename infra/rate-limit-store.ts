import type { Redis } from 'ioredis'
import type { Logger } from './logger.js'

// A fixed window per key, decided in one atomic round trip: the first hit starts the window.
const LUA = `
local current = redis.call('INCR', KEYS[1])
if current == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  return {current, tonumber(ARGV[1])}
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {current, ttl}`

// The count and time left of a window, without counting (a route that counts only failures
// checks its budget before it compares a secret).
const READ_LUA = `
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current == 0 then return {0, 0} end
return {current, math.max(redis.call('PTTL', KEYS[1]), 0)}`

// Two windows in one round trip, the first deciding whether the second is counted at all: a
// user's share, then its tenant's budget (a request refused by the share spends nothing of the
// tenant's). Both keys are the same replica's in a single Redis; a Redis Cluster would need them
// in one hash slot.
const PAIR_LUA = `
local function hit (key, window)
  local current = redis.call('INCR', key)
  if current == 1 then
    redis.call('PEXPIRE', key, window)
    return current, window
  end
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then
    redis.call('PEXPIRE', key, window)
    ttl = window
  end
  return current, ttl
end
local window = tonumber(ARGV[1])
local first, firstTtl = hit(KEYS[1], window)
if first > tonumber(ARGV[2]) then return {first, firstTtl, 0, 0} end
local second, secondTtl = hit(KEYS[2], window)
return {first, firstTtl, second, secondTtl}`

type Callback = (err: Error | null, result?: { current: number, ttl: number }) => void
/** The two windows of incrPair; the second is null when the first refused (it was not counted). */
export interface PairResult { first: { current: number, ttl: number }, second: { current: number, ttl: number } | null }

/** What a limiter counts; each kind has keys of its own. */
export type LimiterKind = 'ip' | 'tenant' | 'user' | 'account' | 'cron'

/**
 * A limiter key: the kind, fixed by the server, then each value percent-encoded, so that no
 * value a client sends can contain the ':' between the parts, nor read as another kind's key
 * (an X-Forwarded-For of `tenant:<id>` is the key `ip:tenant%3A<id>`).
 */
export function limiterKey (kind: LimiterKind, ...values: string[]): string {
  return `${kind}:${values.map(encodeURIComponent).join(':')}`
}

/** What the store saw of Redis: for logs, metrics and tests. */
export interface LimiterHealth {
  redisUp: boolean
  outages: number
  /** Decisions let through because Redis could not answer (general routes fail open). */
  failOpens: number
  /** Decisions taken by the strict per-process fallback (credential routes). */
  fallbacks: number
}

interface StoreParams {
  routeInfo?: { method?: string, url?: string }
  /** Set on credential routes: during an outage they keep a strict per-process limit. */
  strictFallbackMax?: number
}

/** A per-process fixed window, used only while Redis is down. */
function createLocalWindows () {
  const windows = new Map<string, { count: number, resetAt: number }>()
  const count = (key: string, windowMs: number) => {
    const now = Date.now()
    let w = windows.get(key)
    if (!w || w.resetAt <= now) {
      if (windows.size > 10_000) windows.clear() // bounded: an outage must not grow memory without end
      w = { count: 0, resetAt: now + windowMs }
      windows.set(key, w)
    }
    w.count++
    return { count: w.count, ttl: w.resetAt - now }
  }
  const peek = (key: string) => {
    const w = windows.get(key)
    const now = Date.now()
    return w && w.resetAt > now ? { count: w.count, ttl: w.resetAt - now } : { count: 0, ttl: 0 }
  }
  return { count, peek }
}

/**
 * A store for @fastify/rate-limit over Redis that degrades instead of failing: when Redis
 * cannot answer within its command timeout, general routes fail open (counted, logged once
 * per outage) and credential routes fall back to a strict per-process limit. It recovers by
 * itself with the client's reconnect.
 *
 * While Redis is down, one decision at a time asks it (the probe) and every other decision
 * is taken at once without it: a Redis that hangs with its connections open would otherwise
 * cost every request a command timeout per decision. The first probe that is answered ends
 * the outage.
 */
export function createResilientRedisStore ({ redis, log, health, prefix = 'govula:rl:' }: {
  redis: Redis
  log: Logger
  health: LimiterHealth
  prefix?: string
}) {
  redis.defineCommand('govulaRateLimit', { numberOfKeys: 1, lua: LUA })
  redis.defineCommand('govulaRateLimitRead', { numberOfKeys: 1, lua: READ_LUA })
  redis.defineCommand('govulaRateLimitPair', { numberOfKeys: 2, lua: PAIR_LUA })
  const local = createLocalWindows()
  type Script = (key: string, windowMs: number, cb: (err: Error | null, r: [number, number]) => void) => void
  const scripts = redis as unknown as { govulaRateLimit: Script, govulaRateLimitRead: Script }
  const pairScript = redis as unknown as {
    govulaRateLimitPair(
      first: string, second: string, windowMs: number, firstMax: number,
      cb: (err: Error | null, r: [number, number, number, number]) => void
    ): void
  }

  let probing = false
  let lastError = new Error('redis unavailable')

  function down (err: Error) {
    lastError = err
    if (!health.redisUp) return
    health.redisUp = false
    health.outages++
    log.warn({ err: { message: err.message } },
      'redis unavailable: general rate limits fail open, credential routes use a strict per-process limit')
  }

  // Keys are prefix, scope, then the limiter's own key (limiterKey: kind and encoded values):
  // the scope is `all` or a route's encoded `METHOD url`, never containing ':' either.
  return class ResilientRedisStore {
    private readonly key: string
    private readonly strictFallbackMax: number | undefined
    constructor (params: object = {}, scope = 'all') {
      this.key = `${prefix}${scope}:`
      this.strictFallbackMax = (params as StoreParams).strictFallbackMax
    }

    incr (id: string, cb: Callback, timeWindow: number, max: number): void {
      this.decide('govulaRateLimit', id, cb, timeWindow, max)
    }

    /** The window's count without counting (`{ increment: false }` of @fastify/rate-limit). */
    read (id: string, cb: Callback, timeWindow: number, max: number): void {
      this.decide('govulaRateLimitRead', id, cb, timeWindow, max)
    }

    /**
     * Counts `firstId` and, unless that is now over `firstMax`, `secondId`, in one round trip.
     * Without Redis it fails (the caller fails open, as on any general route).
     */
    incrPair (
      firstId: string, secondId: string, timeWindow: number, firstMax: number, cb: (err: Error | null, result?: PairResult) => void
    ): void {
      if (!health.redisUp && probing) {
        health.failOpens++
        cb(lastError)
        return
      }
      const probe = !health.redisUp
      if (probe) probing = true
      pairScript.govulaRateLimitPair(this.key + firstId, this.key + secondId, timeWindow, firstMax, (err, r) => {
        if (probe) probing = false
        if (!err) {
          if (!health.redisUp) {
            health.redisUp = true
            log.info('redis is back: rate limits shared across the cluster again')
          }
          cb(null, { first: { current: r[0], ttl: r[1] }, second: r[2] === 0 ? null : { current: r[2], ttl: r[3] } })
          return
        }
        down(err)
        health.failOpens++
        cb(err)
      })
    }

    private decide (script: keyof typeof scripts, id: string, cb: Callback, timeWindow: number, max: number): void {
      const key = this.key + id
      const counting = script === 'govulaRateLimit'
      if (!health.redisUp && probing) {
        this.degraded(key, counting, cb, timeWindow, max, lastError)
        return
      }
      const probe = !health.redisUp
      if (probe) probing = true
      scripts[script](key, timeWindow, (err, result) => {
        if (probe) probing = false
        if (!err) {
          if (!health.redisUp) {
            health.redisUp = true
            log.info('redis is back: rate limits shared across the cluster again')
          }
          cb(null, { current: result[0], ttl: result[1] })
          return
        }
        down(err)
        this.degraded(key, counting, cb, timeWindow, max, err)
      })
    }

    /** A decision without Redis: the strict local limit on credential routes, else fail open. */
    private degraded (key: string, counting: boolean, cb: Callback, timeWindow: number, max: number, err: Error) {
      if (this.strictFallbackMax !== undefined) {
        health.fallbacks++
        const { count, ttl } = counting ? local.count(key, timeWindow) : local.peek(key)
        // Report "over the limit" once the strict local budget is spent.
        cb(null, { current: count > this.strictFallbackMax || (!counting && count >= this.strictFallbackMax) ? max + 1 : count, ttl })
        return
      }
      health.failOpens++
      cb(err) // with skipOnError the plugin lets the request through
    }

    child (routeOptions: object) {
      const params = routeOptions as StoreParams
      const scope = params.routeInfo?.url ? encodeURIComponent(`${params.routeInfo.method} ${params.routeInfo.url}`) : 'all'
      return new ResilientRedisStore(params, scope)
    }
  }
}
