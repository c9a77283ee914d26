// npm run bench [-- --quick] [--connections 50] [--duration 10] [--warmup 3] [--rounds 3]
//   [--db-max-connections 20] [--only tenant-read,baseline-four-round-trips,…] [--soak 60]
//   [--cpu-prof DIR] [--out bench/results.json] [--no-pin]
//
// The benchmark suite in one run: the service (compiled, `node server.js`, its own process) and
// the baselines of bench/baselines (each its own process) on one real Postgres. TARGETS says
// what is measured, on which server, under which load, and against which baseline; the runner
// at the end takes them phase by phase (lib/phases.ts):
// - rounds: every compared target warmed up until two warm-up rounds agree, then measured in
//   interleaved rounds (A B …, … B A) by autocannon with the same connections and duration; each
//   figure is the median of its rounds with their spread, each ratio the median of the per-round
//   ratios with theirs (lib/measure.ts, lib/ratios.ts);
// - open: the tenant read at fixed arrival rates, 50 % and 80 % of the req/s it has just reached
//   (lib/open-loop.ts): the latency a user sees below saturation;
// - once: the routes measured on their own (login, refresh, recording ingest);
// then the in-process measures, the service's memory through a longer load, and start-to-ready on
// a warm embedded data folder (lib/extras.ts). Prints the tables with the checks against the
// performance targets (lib/checks.ts) and writes bench/results.json. Not part of npm test.
import { randomUUID } from 'node:crypto'
import os from 'node:os'
import { performance } from 'node:perf_hooks'
import { performanceChecks } from './lib/checks.js'
import { parseOptions } from './lib/cli.js'
import { runExtras } from './lib/extras.js'
import { stopLoad, type LoadSpec, type Request } from './lib/load.js'
import { stopOpenLoop } from './lib/open-loop.js'
import { runOnce, runRounds, select, setUp, type Ctx, type Target } from './lib/phases.js'
import { printReport, writeReport } from './lib/output.js'
import { cleanup, installSignalHandlers } from './lib/procs.js'
import { compare, cpuDiff } from './lib/ratios.js'
import type { TargetResult } from './lib/report.js'
import { client, PASSWORD } from './lib/seed.js'
import { Stack } from './lib/stack.js'

const TENANTS = 10
const MEMBERS = 10
const BATCH = 100
const MEMBERS_PATH = '/api/v1/tenant/members'
const CHECK_PATH = '/api/v1/entitlements/check?feature=seats'

const bearer = (t: { accessToken: string }) => ({ authorization: `Bearer ${t.accessToken}` })
/** GET `path` as each tenant in turn (its owner's token), or by tenant id for the baselines. */
const asTenants = (ctx: Ctx, base: string, path: string): LoadSpec =>
  ({ url: base + path, requests: ctx.data.tenants.map(t => ({ method: 'GET', path, headers: bearer(t) })) })
const byTenantId = (ctx: Ctx, base: string, path: string): LoadSpec =>
  ({ url: base + path, requests: ctx.data.tenants.map(t => ({ method: 'GET', path, headers: { 'x-tenant-id': t.id } })) })
const tenantHeader = (ctx: Ctx) => ({ 'x-tenant-id': ctx.data.tenants[0]!.id })
const helloRateLimit = (redis: boolean) => async (ctx: Ctx) =>
  ctx.stack.startBaseline(`baseline-hello-ratelimit-${redis ? 'redis' : 'memory'}`, 'fastify-hello-ratelimit', { path: '/' },
    redis ? { REDIS_URL: await ctx.stack.redisUrl() } : {})

const TARGETS: Target[] = [
  {
    name: 'baseline-hello',
    phase: 'rounds',
    start: ctx => ctx.stack.startBaseline('baseline-hello', 'fastify-hello', { path: '/' }),
    load: (_, s) => ({ url: s.base + '/' })
  },
  {
    name: 'baseline-four-round-trips',
    phase: 'rounds',
    start: ctx => ctx.stack.startBaseline('baseline-four-round-trips', 'fastify-four-round-trips',
      { path: '/members', headers: tenantHeader(ctx), members: MEMBERS }),
    load: (ctx, s) => byTenantId(ctx, s.base, '/members')
  },
  {
    name: 'tenant-read',
    phase: 'rounds',
    load: (ctx, s) => asTenants(ctx, s.base, MEMBERS_PATH),
    vs: ['baseline-four-round-trips', 'baseline-one-round-trip', 'express-tenant-read']
  },
  {
    name: 'baseline-one-round-trip',
    phase: 'rounds',
    start: ctx => ctx.stack.startBaseline('baseline-one-round-trip', 'fastify-one-round-trip',
      { path: '/members', headers: tenantHeader(ctx), members: MEMBERS }),
    load: (ctx, s) => byTenantId(ctx, s.base, '/members'),
    vs: ['baseline-four-round-trips']
  },
  {
    name: 'express-tenant-read',
    phase: 'rounds',
    start: ctx => ctx.stack.startBaseline('express-tenant-read', 'express-tenant-read',
      { path: MEMBERS_PATH, headers: bearer(ctx.data.tenants[0]!), members: MEMBERS }),
    load: (ctx, s) => asTenants(ctx, s.base, MEMBERS_PATH)
  },
  // The rate limiters' overhead: one cheap route (a cached entitlement check) with the limiters
  // in memory and in Redis, and the limiter alone on hello.
  {
    name: 'entitlement-check-memory',
    phase: 'rounds',
    load: (ctx, s) => asTenants(ctx, s.base, CHECK_PATH),
    vs: ['baseline-hello'],
    note: 'limiters in memory'
  },
  {
    name: 'entitlement-check-redis',
    phase: 'rounds',
    start: async ctx => {
      const s = await ctx.stack.startService('service (REDIS_URL)', { REDIS_URL: await ctx.stack.redisUrl() })
      await client(s.base)('GET', CHECK_PATH, undefined, ctx.data.tenants[0]!.accessToken)
      return { ...s, redis: true }
    },
    load: (ctx, s) => asTenants(ctx, s.base, CHECK_PATH),
    vs: ['entitlement-check-memory', 'baseline-hello'],
    note: 'limiters in Redis'
  },
  {
    name: 'baseline-hello-ratelimit-memory',
    phase: 'rounds',
    start: helloRateLimit(false),
    load: (_, s) => ({ url: s.base + '/' }),
    vs: ['baseline-hello']
  },
  {
    name: 'baseline-hello-ratelimit-redis',
    phase: 'rounds',
    start: async ctx => ({ ...await helloRateLimit(true)(ctx), redis: true }),
    load: (_, s) => ({ url: s.base + '/' }),
    vs: ['baseline-hello', 'baseline-hello-ratelimit-memory']
  },
  // Below saturation: the same read at fixed arrival rates.
  ...[50, 80].map((pct): Target => ({
    name: `tenant-read-open-${pct}`,
    phase: 'open',
    load: (ctx, s) => asTenants(ctx, s.base, MEMBERS_PATH),
    rate: { of: 'tenant-read', fraction: pct / 100 },
    note: `open loop at ${pct} % of tenant-read's req/s`
  })),
  {
    name: 'login',
    phase: 'once',
    durationS: o => Math.min(5, o.durationS),
    warmupS: () => 1,
    // The requests a run leaves in argon2's queue are still hashed in the next one: rounds would
    // not settle.
    singleWarmup: true,
    load: (ctx, s) => loginLoad(ctx, s.base),
    note: 'argon2 (19 MiB, t=2, ARGON2_MAX_CONCURRENCY 4), as the members in turn'
  },
  { name: 'refresh', phase: 'once', load: (ctx, s) => refreshLoad(ctx, s.base) },
  {
    name: 'recording-ingest',
    phase: 'once',
    load: (ctx, s) => ingestLoad(ctx, s.base),
    note: `batches of ${BATCH}`,
    finish: r => { r.eventsPerS = r.rps * BATCH }
  }
]

/** The ratios reported: every target against each of its `vs`. */
const COMPARISONS = TARGETS.flatMap(t => (t.vs ?? []).map((b): [string, string] => [t.name, b]))
/** What a limiter costs per request: the difference in server-side CPU (Redis's own included). */
const LIMITER_COSTS: Array<[string, string, string]> = [
  ['service: Redis store − in-memory store', 'entitlement-check-redis', 'entitlement-check-memory'],
  ['hello: + @fastify/rate-limit in memory', 'baseline-hello-ratelimit-memory', 'baseline-hello'],
  ['hello: + @fastify/rate-limit in Redis', 'baseline-hello-ratelimit-redis', 'baseline-hello']
]

/**
 * Logins as the members, one after another across all connections: a user's sessions past
 * MAX_SESSIONS_PER_USER revoke its oldest, and the owners' are the other targets' tokens.
 */
function loginLoad (ctx: Ctx, base: string): LoadSpec {
  const members = ctx.data.members
  let n = 0
  const requests: Request[] = [{
    method: 'POST',
    path: '/api/v1/auth/login',
    headers: { 'content-type': 'application/json' },
    // Each member is in two tenants (its own and the bench tenant): it names the bench tenant.
    setupRequest: req => {
      const m = members[n++ % members.length]!
      return { ...req, body: JSON.stringify({ email: m.email, password: PASSWORD, tenant: m.tenantId }) }
    },
    // Each login is a fresh session: spares for the refresh load.
    onResponse: (status: number, body: string) => {
      if (status === 200) ctx.refreshPool.push((JSON.parse(body) as { refreshToken: string }).refreshToken)
    }
  }]
  return { url: base + '/api/v1/auth/login', method: 'POST', requests }
}

/**
 * Every request spends a different refresh token, taken from a queue that each answer's
 * successor token refills. The answers a run leaves unread (in flight when it stops) are fetched
 * again afterwards: a replay within REFRESH_REUSE_GRACE_S returns the same successor, so the
 * chain goes on without new logins.
 */
function refreshLoad (ctx: Ctx, base: string): LoadSpec {
  const queue = ctx.refreshPool.splice(0)
  const outstanding = new Set<string>()
  const call = client(base)
  const requests: Request[] = [{
    method: 'POST',
    path: '/api/v1/auth/refresh',
    headers: { 'content-type': 'application/json' },
    setupRequest: (req, context) => {
      const token = queue.shift() ?? 'exhausted'
      outstanding.add(token);
      (context as { token?: string }).token = token
      return { ...req, body: JSON.stringify({ refreshToken: token }) }
    },
    onResponse: (status: number, body: string, context) => {
      outstanding.delete((context as { token?: string }).token ?? '')
      if (status === 200) queue.push((JSON.parse(body) as { refreshToken: string }).refreshToken)
    }
  }]
  const afterRun = async () => {
    const lost = [...outstanding].filter(t => t !== 'exhausted')
    outstanding.clear()
    for (const token of lost) {
      const r = await call<{ refreshToken: string }>('POST', '/api/v1/auth/refresh', { refreshToken: token }, undefined, [200, 401])
        .catch(() => null)
      if (r?.refreshToken) queue.push(r.refreshToken)
    }
  }
  return { url: base + '/api/v1/auth/refresh', method: 'POST', requests, afterRun }
}

/** Batches of BATCH click events, each tenant in turn, when the route exists (one probe batch first). */
async function ingestLoad (ctx: Ctx, base: string): Promise<LoadSpec | { skip: string }> {
  const path = '/api/v1/recordings/events'
  const event = (k: number, rec: string) => ({
    id: randomUUID(),
    recordingId: rec,
    type: 'click',
    occurredAt: new Date().toISOString(),
    payload: { x: k, y: 2 * k, target: 'button#save', path: '/settings/profile' }
  })
  const probe = await fetch(base + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...bearer(ctx.data.tenants[0]!) },
    body: JSON.stringify({ events: [event(0, 'bench-probe')] })
  })
  const body = await probe.text()
  if (probe.status === 404) return { skip: `POST ${path} is not registered in app.ts` }
  if (probe.status !== 202) return { skip: `the probe batch was refused: ${probe.status} ${body.slice(0, 200)}` }
  let n = 0
  const requests: Request[] = [{
    method: 'POST',
    path,
    setupRequest: (req) => {
      const t = ctx.data.tenants[n++ % ctx.data.tenants.length]!
      const events = Array.from({ length: BATCH }, (_, k) => event(k, `bench-${n % 50}`))
      return { ...req, headers: { 'content-type': 'application/json', ...bearer(t) }, body: JSON.stringify({ events }) }
    }
  }]
  return { url: base + path, method: 'POST', requests }
}

const log = (msg: string) => process.stderr.write(`[bench ${(performance.now() / 1000).toFixed(1)} s] ${msg}\n`)

async function main () {
  const opts = parseOptions(process.argv.slice(2))
  const loadBefore = os.loadavg()
  const stack = await Stack.create(opts, log)
  const skipped: Record<string, string> = {}
  const selected = select(TARGETS, opts)
  const seeding = { refresh: selected.some(t => t.name === 'refresh'), tenants: TENANTS, members: MEMBERS, skipped }
  const ctx = await setUp(opts, stack, seeding, log)
  const results: TargetResult[] = []
  for (const phase of ['rounds', 'open'] as const) await runRounds(ctx, selected.filter(t => t.phase === phase), results)
  await runOnce(ctx, selected.filter(t => t.phase === 'once'), results)
  const extras = await runExtras(ctx, results, base => asTenants(ctx, base, MEMBERS_PATH))

  const { byRps: ratios, byCpu: cpuRatios } = compare(results, COMPARISONS)
  const limiterCostUs = Object.fromEntries(LIMITER_COSTS.map(([label, a, b]) => [label, cpuDiff(results, a, b)]))
  const figures = { results, ratios, cpuRatios, ...extras, skipped, connections: opts.connections }
  const run = { ...figures, limiterCostUs, checks: performanceChecks(figures) }
  const out = writeReport(opts, stack, loadBefore, run, TENANTS, MEMBERS)
  printReport(opts, stack, loadBefore, run, out, TENANTS, MEMBERS)
}

installSignalHandlers()
process.once('SIGINT', () => { stopLoad(); stopOpenLoop() })
const started = performance.now()
main()
  .then(async () => {
    await cleanup()
    log(`done in ${((performance.now() - started) / 1000).toFixed(0)} s`)
    process.exit(0)
  })
  .catch(async (err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
    await cleanup()
    process.exit(1)
  })
