import http from 'node:http'
import fp from 'fastify-plugin'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

export interface Metrics {
  registry: Registry
  auditAppend: Histogram
  jobRuns: Counter<'job' | 'outcome'>
}

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Metrics
  }
}

/**
 * Prometheus metrics (prom-client), one registry per app instance. Served at GET /metrics only
 * with METRICS_ENABLED: on METRICS_PORT when set (off the public listener), on the main port
 * (unauthenticated, for anyone who reaches it) only with METRICS_PUBLIC=true as well, else not
 * at all (a warning says so). Values owned by other plugins (pool, caches, broadcast, limiter)
 * are read at scrape time, so the hot path pays nothing for them.
 */
export default fp(async (fastify) => {
  const { config, log } = fastify
  const registry = new Registry()
  const metrics: Metrics = {
    registry,
    auditAppend: new Histogram({
      name: 'govula_audit_append_seconds',
      help: 'Audit chain append latency (inside the caller\'s transaction)',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
      registers: [registry]
    }),
    jobRuns: new Counter({
      name: 'govula_job_runs_total', help: 'Scheduled job runs by outcome', labelNames: ['job', 'outcome'], registers: [registry]
    })
  }
  fastify.decorate('metrics', metrics)
  if (!config.METRICS_ENABLED) return

  collectDefaultMetrics({ register: registry })
  // prom-client names three gauges _total, which Prometheus's linter (promtool) refuses; the same
  // counts stay exported by type (nodejs_active_handles{type}, …).
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
    registry.removeSingleMetric(name)
  }
  const duration = new Histogram({
    name: 'govula_http_request_duration_seconds',
    help: 'HTTP request duration by route and status',
    labelNames: ['method', 'route', 'status_code'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry]
  })
  const rejections = new Counter({
    name: 'govula_rate_limit_rejections_total', help: 'Requests answered 429', labelNames: ['route'], registers: [registry]
  })
  fastify.addHook('onResponse', (request, reply, done) => {
    // The route pattern, never the raw URL: label cardinality stays bounded.
    const route = request.routeOptions.url ?? (request.is404 ? '(not found)' : '(unknown)')
    duration.observe({ method: request.method, route, status_code: reply.statusCode }, reply.elapsedTime / 1000)
    if (reply.statusCode === 429) rejections.inc({ route })
    done()
  })

  // Values kept by other plugins, read at scrape time. A gauge is what goes up and down; a count
  // that only grows is a counter (its name ends in _total), set to the running total it reads.
  const gauge = (name: string, help: string, read: () => number | undefined) =>
    new Gauge({ name, help, registers: [registry], collect () { const v = read(); if (v !== undefined) this.set(v) } })
  const counter = (name: string, help: string, read: () => number | undefined) =>
    new Counter({
      name,
      help,
      registers: [registry],
      collect () {
        const v = read()
        if (v === undefined) return
        this.reset()
        this.inc(v)
      }
    })
  const pool = () => fastify.db.pool
  // Connections by state (their sum is the pool's size now), and apart from them the clients
  // waiting for one, which are not connections.
  registry.registerMetric(new Gauge({
    name: 'govula_db_pool_connections',
    help: 'Pool connections by state: checked out (active) or idle',
    labelNames: ['state'],
    registers: [],
    collect () {
      this.set({ state: 'active' }, pool().totalCount - pool().idleCount)
      this.set({ state: 'idle' }, pool().idleCount)
    }
  }))
  gauge('govula_db_pool_waiting_clients', 'Checkouts waiting for a pool connection', () => pool().waitingCount)
  gauge('govula_db_pool_max', 'Pool size (DB_MAX_CONNECTIONS)', () => config.DB_MAX_CONNECTIONS)
  counter('govula_entitlement_cache_hits_total', 'Entitlement checks served from the cache', () => fastify.entitlements?.stats.hits)
  counter('govula_entitlement_cache_misses_total', 'Entitlement checks not answered from the cache',
    () => fastify.entitlements?.stats.misses)
  counter('govula_entitlement_cache_invalidations_total', 'Tenant cache entries dropped by change events',
    () => fastify.entitlements?.stats.invalidations)
  counter('govula_entitlement_loads_total', 'Reads of a tenant\'s entitlements from the database (concurrent misses share one)',
    () => fastify.entitlements?.stats.loads)
  // A feature that is off exports nothing about itself: an alert on "connected 0" or "redis up 0"
  // would fire on every deployment that does not use it.
  if (config.ENTITLEMENT_BROADCAST_ENABLED) {
    gauge('govula_entitlement_broadcast_connected', '1 while the LISTEN connection is up',
      () => fastify.entitlementBroadcast ? Number(fastify.entitlementBroadcast.connected) : undefined)
    counter('govula_entitlement_broadcast_reconnects_total', 'LISTEN reconnections', () => fastify.entitlementBroadcast?.reconnects)
  }
  if (config.REDIS_URL) {
    gauge('govula_redis_up', '1 while Redis answers the limiter', () => Number(fastify.limiterHealth?.redisUp))
    counter('govula_rate_limit_fail_opens_total', 'Limiter decisions let through because Redis could not answer',
      () => fastify.limiterHealth?.failOpens)
    counter('govula_rate_limit_fallbacks_total', 'Credential-route decisions taken by the strict local fallback',
      () => fastify.limiterHealth?.fallbacks)
  }
  gauge('govula_ready', '1 while readiness passes', () => Number(fastify.readiness.ready()))

  const scrape = async () => ({ contentType: registry.contentType, body: await registry.metrics() })
  if (config.METRICS_PORT) {
    const server = http.createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end()
        return
      }
      scrape().then(({ contentType, body }) => res.writeHead(200, { 'content-type': contentType }).end(body),
        () => res.writeHead(500).end())
    })
    fastify.addHook('onListen', async () => {
      // A taken port costs the metrics, not the service: logged, and the API keeps serving.
      try {
        await new Promise<void>((resolve, reject) => server.once('error', reject).listen(config.METRICS_PORT, config.HOST, () => {
          server.off('error', reject)
          resolve()
        }))
        log.info({ port: config.METRICS_PORT }, 'metrics listening')
      } catch (err) {
        log.error({ err, port: config.METRICS_PORT }, 'metrics listener failed: no metrics from this instance')
      }
    })
    fastify.addHook('onClose', async () => { await new Promise(resolve => server.close(resolve)) })
  } else if (!config.METRICS_PUBLIC) {
    log.warn('METRICS_ENABLED without METRICS_PORT: /metrics is not served ' +
      '(set METRICS_PORT, or METRICS_PUBLIC=true to serve it on the public port)')
  } else {
    fastify.get('/metrics', { config: { auth: false, rateLimit: false }, schema: { hide: true } }, async (_request, reply) => {
      const { contentType, body } = await scrape()
      return reply.type(contentType).send(body)
    })
  }
}, { name: 'metrics', dependencies: ['config', 'db', 'readiness'], fastify: '5.x' })
