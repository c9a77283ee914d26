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

type Callback = (err: Error | null, result?: { current: number, ttl: number }) => void

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
  return (key: string, windowMs: number) => {
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
  const local = createLocalWindows()
  const call = redis as unknown as { govulaRateLimit(key: string, windowMs: number, cb: (err: Error | null, r: [number, number]) => void): void }

  let probing = false
  let lastError = new Error('redis unavailable')

  function down (err: Error) {
    lastError = err
    if (!health.redisUp) return
    health.redisUp = false
    health.outages++
    log.warn({ err: { message: err.message } }, 'redis unavailable: general rate limits fail open, credential routes use a strict per-process limit')
  }

  return class ResilientRedisStore {
    private readonly key: string
    private readonly strictFallbackMax: number | undefined
    constructor (params: object = {}, key = prefix) {
      this.key = key
      this.strictFallbackMax = (params as StoreParams).strictFallbackMax
    }

    incr (id: string, cb: Callback, timeWindow: number, max: number): void {
      const key = this.key + id
      if (!health.redisUp && probing) {
        this.degraded(key, cb, timeWindow, max, lastError)
        return
      }
      const probe = !health.redisUp
      if (probe) probing = true
      call.govulaRateLimit(key, timeWindow, (err, result) => {
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
        this.degraded(key, cb, timeWindow, max, err)
      })
    }

    /** A decision without Redis: the strict local limit on credential routes, else fail open. */
    private degraded (key: string, cb: Callback, timeWindow: number, max: number, err: Error) {
      if (this.strictFallbackMax !== undefined) {
        health.fallbacks++
        const { count, ttl } = local(key, timeWindow)
        // Report "over the limit" once the strict local budget is spent.
        cb(null, { current: count > this.strictFallbackMax ? max + 1 : count, ttl })
        return
      }
      health.failOpens++
      cb(err) // with skipOnError the plugin lets the request through
    }

    child (routeOptions: object) {
      const params = routeOptions as StoreParams
      const route = params.routeInfo?.url ? `${params.routeInfo.method}${params.routeInfo.url}:` : ''
      return new ResilientRedisStore(params, `${this.key}${route}`)
    }
  }
}
