// npm run bench [-- --quick] [--connections 50] [--duration 10] [--warmup 3]
//   [--db-max-connections 20] [--only tenant-read,baseline-four-round-trips,…] [--soak 60]
//   [--out bench/results.json] [--no-pin]
//
// Issue 9's suite in one run: the service (compiled, `node server.js`, its own process) and
// the baselines of bench/baselines (each its own process) on one real Postgres, loaded one
// after another by autocannon with the same connections and duration after a warm-up; then
// the in-process measures (entitlement checks, broadcast propagation, audit appends), the
// service's memory through a longer load, and start-to-ready on a warm embedded data folder.
// Prints one table with the ratios and writes bench/results.json. Not part of npm test.
import { randomUUID } from 'node:crypto'
import { existsSync, renameSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import pg from 'pg'
import { ConfigSchema } from '../config.js'
import { BUILD_DIR, ROOT, buildService } from './lib/build.js'
import { auditBench, ensureOperator, entitlementBench, type AuditResult, type EntitlementResult } from './lib/inprocess.js'
import { measure, stopLoad, type LoadOptions, type LoadSpec, type Request } from './lib/load.js'
import {
  affinity, canPin, cleanup, cpuMeter, freePort, installSignalHandlers, onCleanup, parentPid, pin, processTree,
  restoreAffinity, sampleRss, spawnChild, waitForHttp, type Child
} from './lib/procs.js'
import { atLeast, atMost, checkTable, ratioTable, table, type Check, type TargetResult } from './lib/report.js'
import { client, PASSWORD, refreshTokens, seed, type Seed } from './lib/seed.js'
import { startToReady, type StartupResult } from './lib/startup.js'
import { benchDatabase, machine } from './support.js'

const argv = process.argv.slice(2)
const { values: args } = parseArgs({
  args: argv,
  options: {
    quick: { type: 'boolean', default: false },
    connections: { type: 'string', default: '50' },
    duration: { type: 'string' },
    warmup: { type: 'string' },
    'db-max-connections': { type: 'string', default: '20' },
    only: { type: 'string' },
    soak: { type: 'string' },
    rounds: { type: 'string', default: '1' },
    'cpu-prof': { type: 'string' },
    out: { type: 'string', default: 'bench/results.json' },
    'no-pin': { type: 'boolean', default: false }
  }
})
const quick = args.quick!
const connections = Number(args.connections)
const durationS = Number(args.duration ?? (quick ? 2 : 10))
const warmupS = Number(args.warmup ?? (quick ? 1 : 3))
const dbMax = Number(args['db-max-connections'])
const soakS = Number(args.soak ?? (quick ? 0 : 60))
const rounds = Number(args.rounds)
// --quick: the tenant read, its baselines and the cheap service routes; nothing that needs
// argon2 sessions, another server, or a second cluster.
const QUICK = ['baseline-hello', 'baseline-four-round-trips', 'tenant-read', 'baseline-one-round-trip', 'express-tenant-read', 'recording-ingest', 'entitlement-check-memory']
const only = args.only ? new Set(args.only.split(',').map(s => s.trim())) : quick ? new Set(QUICK) : null
const wanted = (name: string) => !only || only.has(name)
for (const [flag, v] of Object.entries({ connections, durationS, warmupS, dbMax, soakS, rounds })) {
  if (!Number.isFinite(v) || v < 0) throw new Error(`invalid --${flag}`)
}
const command = `npm run bench${argv.length ? ' -- ' + argv.join(' ') : ''}`

const TENANTS = 10
const MEMBERS = 10
const BATCH = 100
const loadOpts: LoadOptions = { connections, durationS, warmupS }
const log = (msg: string) => process.stderr.write(`[bench ${(performance.now() / 1000).toFixed(1)} s] ${msg}\n`)

installSignalHandlers()
process.once('SIGINT', stopLoad)

// Children get a clean environment: none of the service's settings leak in from this shell.
const cleanEnv: Record<string, string> = {}
for (const [k, v] of Object.entries(process.env)) {
  if (v !== undefined && !(k in ConfigSchema.properties) && k !== 'NODE_OPTIONS') cleanEnv[k] = v
}

const results: TargetResult[] = []
const skipped: Record<string, string> = {}
const inProcess: { entitlements?: EntitlementResult, audit?: AuditResult[] } = {}
let memory: Record<string, number> | undefined
let startup: StartupResult | undefined

async function main () {
  const pinned = !args['no-pin'] && canPin()
  const loadBefore = os.loadavg()

  log('compiling the service and the baselines (tsc, tsconfig.build.json settings)')
  const build = buildService()
  log(`built in ${(build.ms / 1000).toFixed(1)} s`)
  if (build.warnings) log(`WARNING: tsc reported errors (JavaScript emitted anyway):\n${build.warnings.split('\n').slice(0, 10).join('\n')}`)
  const serverJs = path.join(BUILD_DIR, 'server.js')
  const baselineJs = (name: string) => path.join(BUILD_DIR, 'bench', 'baselines', `${name}.js`)

  log('starting Postgres and a migrated database')
  const db = await benchDatabase()
  onCleanup(() => db.stop())
  const probe = new pg.Client({ connectionString: db.runtimeUrl })
  await probe.connect()
  const { rows: [info] } = await probe.query<{ pid: number, version: string, max: string }>(
    "SELECT pg_backend_pid() AS pid, current_setting('server_version') AS version, current_setting('max_connections') AS max")
  // The postmaster is the backend's parent: read it while the backend still exists.
  const postmaster = parentPid(info!.pid)
  await probe.end()

  // Postgres and the servers on core 0, autocannon (this process) on core 1: applied once the
  // seed is in (argon2 signups go faster on both cores); later servers start pinned.
  let pinNote = args['no-pin'] ? 'not pinned (--no-pin)' : 'not pinned (no taskset or one core)'
  let cpuServer: number | undefined
  const pinAll = (servicePid: number) => {
    if (!pinned) return
    let ok = pin(servicePid, 0)
    if (postmaster) {
      const before = affinity(postmaster)
      // A backend that exited meanwhile is no failure; one still alive and unpinned is.
      ok = processTree(postmaster).every(pid => pin(pid, 0) || !existsSync(`/proc/${pid}`)) && ok
      if (process.env.TEST_DATABASE_URL && before) onCleanup(() => { for (const pid of processTree(postmaster)) restoreAffinity(pid, before) })
    } else {
      ok = false
    }
    pin(process.pid, 1)
    cpuServer = 0
    pinNote = ok ? 'servers and Postgres on core 0, autocannon (the bench process) on core 1 (taskset)' : 'partly pinned: taskset refused some processes'
    log(pinNote)
  }
  // Ours: this process and its children (servers, redis, the embedded Postgres), and an external Postgres.
  let redisPid: number | undefined
  const ourRoots = () => postmaster && process.env.TEST_DATABASE_URL ? [process.pid, postmaster] : [process.pid]

  const serviceEnv = (extra: Record<string, string> = {}): Record<string, string> => ({
    ...cleanEnv,
    NODE_ENV: 'production',
    LOG_LEVEL: 'warn',
    HOST: '127.0.0.1',
    DATABASE_URL: db.runtimeUrl,
    MIGRATION_DATABASE_URL: db.ownerUrl,
    DB_MAX_CONNECTIONS: String(dbMax),
    // The per-IP limiters count every request but never refuse one.
    RATE_LIMIT_MAX: '1000000000',
    AUTH_RATE_LIMIT_MAX: '1000000000',
    ACCESS_TOKEN_TTL_S: '7200',
    ...extra
  })

  async function startService (name: string, extra: Record<string, string> = {}, profile = false) {
    const port = await freePort()
    // --cpu-prof DIR: the main service writes a V8 CPU profile there when it stops.
    const nodeArgs = profile && args['cpu-prof'] ? ['--cpu-prof', '--cpu-prof-dir', path.resolve(args['cpu-prof'])] : []
    const child = spawnChild({ name, command: process.execPath, args: [...nodeArgs, serverJs], env: serviceEnv({ PORT: String(port), ...extra }), cwd: ROOT, cpu: cpuServer })
    await waitForHttp(child, `http://127.0.0.1:${port}/api/v1/health`)
    return { child, base: `http://127.0.0.1:${port}` }
  }

  async function startBaseline (file: string, extra: Record<string, string> = {}) {
    const port = await freePort()
    const child = spawnChild({
      name: file,
      command: process.execPath,
      args: [baselineJs(file)],
      env: { ...cleanEnv, PORT: String(port), HOST: '127.0.0.1', DATABASE_URL: db.runtimeUrl, MIGRATION_DATABASE_URL: db.ownerUrl, DB_MAX_CONNECTIONS: String(dbMax), ...extra },
      cwd: ROOT,
      cpu: cpuServer
    })
    return { child, base: `http://127.0.0.1:${port}`, port }
  }

  /** Measures one target on a running process, sampling its RSS during the measured run. */
  async function target (name: string, child: Child, spec: LoadSpec, opts: LoadOptions = loadOpts, extra: Partial<TargetResult> = {}, record = true) {
    log(`measuring ${name} (${opts.connections} connections, ${opts.warmupS} s warm-up + ${opts.durationS} s)`)
    if (opts.warmupS > 0) {
      await measure(spec, { ...opts, durationS: opts.warmupS, warmupS: 0 })
      await spec.afterRun?.()
    }
    // RSS and the machine's other load are sampled during the measured run only.
    const sampler = sampleRss(child.pid)
    const meter = cpuMeter({ app: child.pid, serverSide: () => [child.pid, ...(postmaster ? [postmaster] : []), ...(redisPid ? [redisPid] : [])], ours: ourRoots })
    const r = await measure(spec, { ...opts, warmupS: 0 })
    const cpu = meter.stop()
    const rss = sampler.stop()
    await spec.afterRun?.()
    const served = r.rps * r.durationS
    const result: TargetResult = {
      name,
      ...r,
      // Server-side CPU per answered request (service or baseline + Postgres + Redis): what
      // the work costs, which a busy machine changes far less than it changes req/s.
      cpuUsPerReq: served > 0 ? cpu.serverCpuS / served * 1e6 : NaN,
      appCpuUsPerReq: served > 0 ? cpu.appCpuS / served * 1e6 : NaN,
      serverCpuCores: cpu.serverCpuS / r.durationS,
      rssPeakMiB: rss.peak / 2 ** 20,
      otherLoadPct: cpu.otherLoadPct,
      ...extra
    }
    if (record) results.push(result)
    log(`  ${name}: ${Math.round(r.rps)} req/s, p50 ${r.p50Ms} ms, p99 ${r.p99Ms} ms, non-2xx ${r.non2xx}; server CPU ${Math.round(result.cpuUsPerReq!)} µs/req on ${result.serverCpuCores!.toFixed(2)} cores; other load ${cpu.otherLoadPct.toFixed(0)} %`)
    if (r.non2xx > 0.01 * r.requests) log(`  WARNING: ${name} answered ${r.non2xx} of ${r.requests} requests with a non-2xx status`)
    return result
  }

  // ---- the service, seeded through its API
  log('starting the service')
  const main = await startService('service', {}, true)
  const operatorEmail = `bench-operator-${randomUUID().slice(0, 8)}@example.test`
  await ensureOperator(db, operatorEmail)
  log(`seeding ${TENANTS} tenants × ${MEMBERS} members (signups: argon2 each)`)
  const t0 = performance.now()
  const data: Seed = await seed({ base: main.base, operatorEmail, tenants: TENANTS, membersPerTenant: MEMBERS })
  // The refresh load spends one token per request; it starts from one session per connection.
  const refreshPool = wanted('refresh') ? await refreshTokens(main.base, data.tenants, connections + 10) : []
  log(`seeded in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
  pinAll(main.child.pid)
  const bearer = (t: { accessToken: string }) => ({ authorization: `Bearer ${t.accessToken}` })
  const rotateTokens = (p: string): Request[] => data.tenants.map(t => ({ method: 'GET', path: p, headers: bearer(t) }))
  const rotateTenantIds = (p: string): Request[] => data.tenants.map(t => ({ method: 'GET', path: p, headers: { 'x-tenant-id': t.id } }))

  /** Starts a baseline and checks it answers like the service (10 members for the reads). */
  async function baseline (name: string, file: string, probePath: string, extra: Record<string, string> = {}, headers: Record<string, string> = {}) {
    const b = await startBaseline(file, extra)
    try {
      await waitForHttp(b.child, b.base + '/', { status: probePath === '/' ? 200 : 404 })
      const check = await fetch(b.base + probePath, { headers })
      const body = await check.text()
      if (check.status !== 200) throw new Error(`${name}: ${probePath} → ${check.status} ${body}`)
      if (probePath !== '/' && (JSON.parse(body) as { members: unknown[] }).members.length !== MEMBERS) throw new Error(`${name}: expected ${MEMBERS} members, got ${body}`)
    } catch (err) {
      await b.child.stop()
      throw err
    }
    return b
  }

  // ---- the tenant read and its baselines, measured back to back (in --rounds rounds: the
  // median of each is reported, and the ratios are the medians of the per-round ratios)
  const first = data.tenants[0]!
  const core: Array<{ name: string, start: () => Promise<{ child: Child, base: string }>, spec: (base: string) => LoadSpec }> = [
    { name: 'baseline-hello', start: () => baseline('baseline-hello', 'fastify-hello', '/'), spec: base => ({ url: base + '/' }) },
    { name: 'baseline-four-round-trips', start: () => baseline('baseline-four-round-trips', 'fastify-four-round-trips', '/members', {}, { 'x-tenant-id': first.id }), spec: base => ({ url: base + '/members', requests: rotateTenantIds('/members') }) },
    { name: 'tenant-read', start: async () => main, spec: base => ({ url: base + '/api/v1/tenant/members', requests: rotateTokens('/api/v1/tenant/members') }) },
    { name: 'baseline-one-round-trip', start: () => baseline('baseline-one-round-trip', 'fastify-one-round-trip', '/members', {}, { 'x-tenant-id': first.id }), spec: base => ({ url: base + '/members', requests: rotateTenantIds('/members') }) },
    { name: 'express-tenant-read', start: () => baseline('express-tenant-read', 'express-tenant-read', '/api/v1/tenant/members', {}, bearer(first)), spec: base => ({ url: base + '/api/v1/tenant/members', requests: rotateTokens('/api/v1/tenant/members') }) }
  ]
  const running = new Map<string, { child: Child, base: string }>()
  try {
    for (const c of core.filter(c => wanted(c.name))) running.set(c.name, await c.start())
    const perRound = new Map<string, TargetResult[]>()
    for (let round = 1; round <= rounds; round++) {
      if (rounds > 1) log(`round ${round} of ${rounds}`)
      for (const c of core) {
        const proc = running.get(c.name)
        if (!proc) continue
        const r = await target(c.name, proc.child, c.spec(proc.base), loadOpts, {}, false)
        perRound.set(c.name, [...(perRound.get(c.name) ?? []), r])
      }
    }
    for (const c of core) {
      const list = perRound.get(c.name)
      if (!list) continue
      const med = (f: (t: TargetResult) => number) => median(list.map(f))
      results.push(list.length === 1
        ? list[0]!
        : { ...list[0]!, rps: med(t => t.rps), p50Ms: med(t => t.p50Ms), p99Ms: med(t => t.p99Ms), non2xx: list.reduce((a, t) => a + t.non2xx, 0), rssPeakMiB: Math.max(...list.map(t => t.rssPeakMiB ?? 0)), otherLoadPct: med(t => t.otherLoadPct ?? 0), cpuUsPerReq: med(t => t.cpuUsPerReq ?? NaN), appCpuUsPerReq: med(t => t.appCpuUsPerReq ?? NaN), serverCpuCores: med(t => t.serverCpuCores ?? NaN), rpsRounds: list.map(t => Math.round(t.rps)), cpuUsRounds: list.map(t => Math.round(t.cpuUsPerReq ?? NaN)) })
    }
  } finally {
    for (const [name, proc] of running) if (name !== 'tenant-read') await proc.child.stop()
  }

  // ---- credentials: login (argon2-bound), then refresh (rotation, every token used once)
  if (wanted('login')) {
    const loginOpts = { connections, durationS: Math.min(5, durationS), warmupS: 1 }
    const requests: Request[] = data.tenants.map(t => ({
      method: 'POST',
      path: '/api/v1/auth/login',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: t.ownerEmail, password: PASSWORD }),
      // Each login is a fresh session: spares for the refresh load below.
      onResponse: (status: number, body: string) => { if (status === 200) refreshPool.push((JSON.parse(body) as { refreshToken: string }).refreshToken) }
    }))
    await target('login', main.child, { url: main.base + '/api/v1/auth/login', method: 'POST', requests }, loginOpts,
      { note: `argon2 (19 MiB, t=2, ARGON2_MAX_CONCURRENCY 4), ${loginOpts.durationS} s` })
  }
  if (wanted('refresh')) {
    // Every request spends a different refresh token, taken from a queue that each answer's
    // successor token refills. The answers a run leaves unread (in flight when it stops) are
    // fetched again afterwards: a replay within REFRESH_REUSE_GRACE_S returns the same
    // successor, so the chain goes on without new logins.
    const queue = refreshPool.splice(0)
    const outstanding = new Set<string>()
    const call = client(main.base)
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
        const r = await call<{ refreshToken: string }>('POST', '/api/v1/auth/refresh', { refreshToken: token }, undefined, [200, 401]).catch(() => null)
        if (r?.refreshToken) queue.push(r.refreshToken)
      }
    }
    await target('refresh', main.child, { url: main.base + '/api/v1/auth/refresh', method: 'POST', requests, afterRun })
  }

  // ---- recording ingest, when the route exists
  if (wanted('recording-ingest')) {
    const event = (k: number, rec: string) => ({ id: randomUUID(), recordingId: rec, type: 'click', occurredAt: new Date().toISOString(), payload: { x: k, y: 2 * k, target: 'button#save', path: '/settings/profile' } })
    const probeRes = await fetch(main.base + '/api/v1/recordings/events', {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...bearer(data.tenants[0]!) },
      body: JSON.stringify({ events: [event(0, 'bench-probe')] })
    })
    const probeBody = await probeRes.text()
    if (probeRes.status === 404) {
      skipped['recording-ingest'] = 'POST /api/v1/recordings/events is not registered in app.ts'
    } else if (probeRes.status !== 202) {
      skipped['recording-ingest'] = `the probe batch was refused: ${probeRes.status} ${probeBody.slice(0, 200)}`
    } else {
      let n = 0
      const requests: Request[] = [{
        method: 'POST',
        path: '/api/v1/recordings/events',
        setupRequest: (req) => {
          const t = data.tenants[n++ % data.tenants.length]!
          const rec = `bench-${n % 50}`
          return { ...req, headers: { 'content-type': 'application/json', ...bearer(t) }, body: JSON.stringify({ events: Array.from({ length: BATCH }, (_, k) => event(k, rec)) }) }
        }
      }]
      const r = await target('recording-ingest', main.child, { url: main.base + '/api/v1/recordings/events', method: 'POST', requests }, loadOpts, { note: `batches of ${BATCH}` })
      r.eventsPerS = r.rps * BATCH
    }
    if (skipped['recording-ingest']) log(`recording-ingest skipped: ${skipped['recording-ingest']}`)
  }

  // ---- rate limiter overhead: one cheap route (cached entitlement check), in memory vs Redis,
  // and the limiter alone on hello
  const checkPath = '/api/v1/entitlements/check?feature=seats'
  if (wanted('entitlement-check-memory')) {
    await target('entitlement-check-memory', main.child, { url: main.base + checkPath, requests: rotateTokens(checkPath) }, loadOpts, { note: 'limiters in memory' })
  }
  const needRedis = ['entitlement-check-redis', 'baseline-hello-ratelimit-redis'].some(wanted)
  let redisUrl: string | undefined
  if (needRedis) {
    const port = await freePort()
    const redis = spawnChild({ name: 'redis-server', command: 'redis-server', args: ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], env: cleanEnv, cpu: cpuServer })
    await waitForRedis(redis, port)
    redisUrl = `redis://127.0.0.1:${port}`
    redisPid = redis.pid
  }
  if (wanted('entitlement-check-redis') && redisUrl) {
    const svc = await startService('service (REDIS_URL)', { REDIS_URL: redisUrl })
    try {
      await client(svc.base)('GET', checkPath, undefined, data.tenants[0]!.accessToken)
      await target('entitlement-check-redis', svc.child, { url: svc.base + checkPath, requests: rotateTokens(checkPath) }, loadOpts, { note: 'limiters in Redis' })
    } finally {
      await svc.child.stop()
    }
  }
  for (const [name, extra] of [['baseline-hello-ratelimit-memory', {}], ['baseline-hello-ratelimit-redis', { REDIS_URL: redisUrl }]] as const) {
    if (!wanted(name) || (name.endsWith('redis') && !redisUrl)) continue
    const b = await baseline(name, 'fastify-hello-ratelimit', '/', extra.REDIS_URL ? { REDIS_URL: extra.REDIS_URL } : {})
    try {
      await target(name, b.child, { url: b.base + '/' })
    } finally {
      await b.child.stop()
    }
  }

  // ---- in-process: audit appends, entitlement checks and broadcast propagation
  if (wanted('audit')) {
    const seconds = quick ? 1 : 5
    inProcess.audit = []
    for (const chains of [1, 10]) {
      log(`audit appends on ${chains} chain(s), 32 concurrent, ${seconds} s`)
      inProcess.audit.push(await auditBench(db, { chains, seconds, concurrency: 32, poolSize: dbMax }))
    }
  }
  if (wanted('entitlements-inprocess')) {
    log('entitlement checks in-process and broadcast propagation (3 in-process instances)')
    inProcess.entitlements = await entitlementBench(db, { checks: quick ? 1_000_000 : 5_000_000, propagations: quick ? 20 : 100 })
  }

  // ---- memory through a longer tenant-read load (heap from the service's own metrics)
  if (wanted('memory') && soakS > 0) {
    const metricsPort = await freePort()
    const svc = await startService('service (metrics)', { METRICS_ENABLED: 'true', METRICS_PORT: String(metricsPort) })
    try {
      const scrape = async () => {
        const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()
        const value = (name: string) => Number(new RegExp(`^${name} ([0-9.e+]+)`, 'm').exec(text)?.[1] ?? NaN)
        return { used: value('nodejs_heap_size_used_bytes'), total: value('nodejs_heap_size_total_bytes') }
      }
      let heapPeak = 0
      let heapTotalPeak = 0
      const timer = setInterval(() => {
        scrape().then(h => { heapPeak = Math.max(heapPeak, h.used); heapTotalPeak = Math.max(heapTotalPeak, h.total) }).catch(() => {})
      }, 1000)
      const start = await scrape()
      const rss = sampleRss(svc.child.pid)
      const r = await target(`tenant-read (${soakS} s, metrics on)`, svc.child, { url: svc.base + '/api/v1/tenant/members', requests: rotateTokens('/api/v1/tenant/members') }, { connections, durationS: soakS, warmupS: 0 })
      clearInterval(timer)
      const end = await scrape()
      const rssStats = rss.stop()
      memory = {
        soakS,
        connections,
        rps: r.rps,
        heapUsedStartMiB: start.used / 2 ** 20,
        heapUsedPeakMiB: Math.max(heapPeak, end.used) / 2 ** 20,
        heapUsedEndMiB: end.used / 2 ** 20,
        heapTotalPeakMiB: Math.max(heapTotalPeak, end.total) / 2 ** 20,
        rssPeakMiB: rssStats.peak / 2 ** 20,
        rssEndMiB: rssStats.last / 2 ** 20
      }
    } finally {
      await svc.child.stop()
    }
  } else if (wanted('memory')) {
    skipped.memory = 'no soak (--quick or --soak 0); RSS peaks per target are in the table'
  }

  await main.child.stop()

  // ---- start to ready on an embedded data folder
  if (wanted('startup') && !quick) {
    log('start to ready: one cold start (initialises the folder), then 3 warm starts')
    startup = await startToReady({ serverJs, env: { ...cleanEnv, NODE_ENV: 'production', LOG_LEVEL: 'warn', HOST: '127.0.0.1' }, warmRuns: 3, cpu: cpuServer })
  } else if (wanted('startup')) {
    skipped.startup = 'not in --quick (the cold start initialises a cluster)'
  }

  // ---- ratios, checks, output
  const rps = (name: string) => results.find(t => t.name === name)?.rps
  const ratio = (a: string, b: string) => {
    const ra = results.find(t => t.name === a)?.rpsRounds
    const rb = results.find(t => t.name === b)?.rpsRounds
    if (ra && rb && ra.length === rb.length) return median(ra.map((v, i) => v / rb[i]!))
    const x = rps(a)
    const y = rps(b)
    return x !== undefined && y !== undefined ? x / y : NaN
  }
  const cpu = (name: string) => results.find(t => t.name === name)?.cpuUsPerReq
  // The same comparison by server-side CPU per request (b's cost / a's cost = a's capacity
  // relative to b's on equal CPU): far steadier than req/s when the machine is shared.
  const cpuRatio = (a: string, b: string) => {
    const ca = results.find(t => t.name === a)?.cpuUsRounds
    const cb = results.find(t => t.name === b)?.cpuUsRounds
    if (ca && cb && ca.length === cb.length) return median(ca.map((v, i) => cb[i]! / v))
    const x = cpu(a)
    const y = cpu(b)
    return x !== undefined && y !== undefined ? y / x : NaN
  }
  const cpuDiff = (a: string, b: string) => { const x = cpu(a); const y = cpu(b); return x !== undefined && y !== undefined ? x - y : NaN }
  const ratios: Record<string, number> = {
    'tenant-read / baseline-four-round-trips': ratio('tenant-read', 'baseline-four-round-trips'),
    'tenant-read / baseline-one-round-trip': ratio('tenant-read', 'baseline-one-round-trip'),
    'tenant-read / express-tenant-read': ratio('tenant-read', 'express-tenant-read'),
    'baseline-one-round-trip / baseline-four-round-trips': ratio('baseline-one-round-trip', 'baseline-four-round-trips'),
    'entitlement-check-redis / entitlement-check-memory': ratio('entitlement-check-redis', 'entitlement-check-memory'),
    'entitlement-check-memory / baseline-hello': ratio('entitlement-check-memory', 'baseline-hello'),
    'entitlement-check-redis / baseline-hello': ratio('entitlement-check-redis', 'baseline-hello'),
    'baseline-hello-ratelimit-memory / baseline-hello': ratio('baseline-hello-ratelimit-memory', 'baseline-hello'),
    'baseline-hello-ratelimit-redis / baseline-hello': ratio('baseline-hello-ratelimit-redis', 'baseline-hello'),
    'baseline-hello-ratelimit-redis / baseline-hello-ratelimit-memory': ratio('baseline-hello-ratelimit-redis', 'baseline-hello-ratelimit-memory')
  }

  const cpuRatios: Record<string, number> = {
    'tenant-read / baseline-four-round-trips': cpuRatio('tenant-read', 'baseline-four-round-trips'),
    'tenant-read / baseline-one-round-trip': cpuRatio('tenant-read', 'baseline-one-round-trip'),
    'tenant-read / express-tenant-read': cpuRatio('tenant-read', 'express-tenant-read'),
    'baseline-one-round-trip / baseline-four-round-trips': cpuRatio('baseline-one-round-trip', 'baseline-four-round-trips'),
    'entitlement-check-redis / entitlement-check-memory': cpuRatio('entitlement-check-redis', 'entitlement-check-memory'),
    'baseline-hello-ratelimit-memory / baseline-hello': cpuRatio('baseline-hello-ratelimit-memory', 'baseline-hello'),
    'baseline-hello-ratelimit-redis / baseline-hello': cpuRatio('baseline-hello-ratelimit-redis', 'baseline-hello')
  }
  // What a limiter costs per request: the difference in server-side CPU (Redis's own included).
  const limiterCostUs: Record<string, number> = {
    'service: Redis store − in-memory store': cpuDiff('entitlement-check-redis', 'entitlement-check-memory'),
    'hello: + @fastify/rate-limit in memory': cpuDiff('baseline-hello-ratelimit-memory', 'baseline-hello'),
    'hello: + @fastify/rate-limit in Redis': cpuDiff('baseline-hello-ratelimit-redis', 'baseline-hello')
  }

  const tenantRead = results.find(t => t.name === 'tenant-read')
  const ingest = results.find(t => t.name === 'recording-ingest')
  const audit1 = inProcess.audit?.find(a => a.chains === 1)
  const audit10 = inProcess.audit?.find(a => a.chains === 10)
  const xc = (key: string) => (n: number) => `${n.toFixed(2)}× (by CPU per request: ${Number.isFinite(cpuRatios[key]!) ? cpuRatios[key]!.toFixed(2) + '×' : '–'})`
  const warmMedian = startup ? [...startup.warmMs].sort((a, b) => a - b)[Math.floor(startup.warmMs.length / 2)] : undefined
  const checks: Check[] = [
    atLeast('tenant read ≥ 1.0× four-round-trip baseline', ratios['tenant-read / baseline-four-round-trips'], 1.0, xc('tenant-read / baseline-four-round-trips')),
    atLeast('tenant read ≥ 0.6× one-round-trip baseline', ratios['tenant-read / baseline-one-round-trip'], 0.6, xc('tenant-read / baseline-one-round-trip')),
    connections === 50
      ? atMost('tenant read p99 ≤ 25 ms at 50 connections', tenantRead?.p99Ms, 25, n => `${n} ms`)
      : { target: 'tenant read p99 ≤ 25 ms at 50 connections', value: `${tenantRead?.p99Ms ?? '–'} ms at ${connections} connections`, met: null, by: 'run at 50 connections to judge' },
    atLeast('tenant read ≥ 3× Express', ratios['tenant-read / express-tenant-read'], 3, xc('tenant-read / express-tenant-read')),
    ingest ? atLeast('recording ingest ≥ 30,000 events/s', ingest.eventsPerS, 30_000, n => `${Math.round(n)} events/s`) : { target: 'recording ingest ≥ 30,000 events/s', value: skipped['recording-ingest'] ?? 'not measured', met: null, by: '' },
    atLeast('audit appends ≥ 1,000/s on one chain', audit1?.appendsPerS, 1000, n => `${Math.round(n)}/s`),
    audit1 && audit10
      ? { target: 'audit appends: more on ten chains than on one', value: `${Math.round(audit10.appendsPerS)}/s vs ${Math.round(audit1.appendsPerS)}/s`, met: audit10.appendsPerS > audit1.appendsPerS, by: `${((audit10.appendsPerS / audit1.appendsPerS - 1) * 100).toFixed(0)} %` }
      : { target: 'audit appends: more on ten chains than on one', value: skipped.audit ?? 'not measured', met: null, by: '' },
    atLeast('cached entitlement check ≥ 5 M/s in-process', inProcess.entitlements?.cachedChecksPerS, 5e6, n => `${(n / 1e6).toFixed(1)} M/s`),
    atMost('broadcast propagation p99 ≤ 100 ms', inProcess.entitlements?.propagationP99Ms, 100, n => `${n.toFixed(1)} ms`),
    memory
      ? atMost(`heap < 150 MB through a ${memory.soakS} s load at ${memory.connections} connections`, memory.heapUsedPeakMiB! * 2 ** 20 / 1e6, 150, n => `${n.toFixed(0)} MB peak used (RSS peak ${(memory!.rssPeakMiB! * 2 ** 20 / 1e6).toFixed(0)} MB)`)
      : { target: 'heap < 150 MB through a 60 s load', value: skipped.memory ?? 'not measured', met: null, by: '' },
    atMost('start to ready on a warm embedded folder ≤ 3 s (median of warm starts)', warmMedian !== undefined ? warmMedian / 1000 : undefined, 3, n => `${n.toFixed(2)} s`)
  ]

  const report = {
    machine: `${machine()}; Postgres ${info!.version} (max_connections ${info!.max}, ${process.env.TEST_DATABASE_URL ? 'TEST_DATABASE_URL' : 'embedded'}); load average before the run ${loadBefore.map(l => l.toFixed(2)).join(' ')}`,
    command,
    pinned: pinNote.startsWith('servers'),
    pinning: pinNote,
    connections,
    durationS,
    warmupS,
    dbMaxConnections: dbMax,
    rounds,
    tenants: TENANTS,
    rowsPerRead: MEMBERS,
    startedAt: new Date(Date.now() - performance.now()).toISOString(),
    targets: results.map(t => ({
      ...t,
      rps: round(t.rps),
      ...(t.eventsPerS !== undefined ? { eventsPerS: round(t.eventsPerS) } : {}),
      ...(t.rssPeakMiB !== undefined ? { rssPeakMiB: round(t.rssPeakMiB) } : {}),
      ...(t.cpuUsPerReq !== undefined ? { cpuUsPerReq: round(t.cpuUsPerReq) } : {}),
      ...(t.appCpuUsPerReq !== undefined ? { appCpuUsPerReq: round(t.appCpuUsPerReq) } : {}),
      ...(t.serverCpuCores !== undefined ? { serverCpuCores: Number(t.serverCpuCores.toFixed(2)) } : {}),
      ...(t.otherLoadPct !== undefined ? { otherLoadPct: round(t.otherLoadPct) } : {})
    })),
    ratios: Object.fromEntries(Object.entries(ratios).filter(([, v]) => Number.isFinite(v)).map(([k, v]) => [k, Number(v.toFixed(3))])),
    cpuRatios: Object.fromEntries(Object.entries(cpuRatios).filter(([, v]) => Number.isFinite(v)).map(([k, v]) => [k, Number(v.toFixed(3))])),
    limiterCostUs: Object.fromEntries(Object.entries(limiterCostUs).filter(([, v]) => Number.isFinite(v)).map(([k, v]) => [k, Number(v.toFixed(1))])),
    inProcess,
    memory,
    startup,
    skipped,
    checks
  }
  const out = path.resolve(ROOT, args.out!)
  writeFileSync(out + '.tmp', JSON.stringify(report, null, 2) + '\n')
  renameSync(out + '.tmp', out)

  const lines = [
    `machine: ${report.machine}`,
    `command: ${command}`,
    `pinning: ${pinNote}; ${connections} connections, ${warmupS} s warm-up + ${durationS} s per target${rounds > 1 ? `, ${rounds} rounds of the tenant read and its baselines (medians)` : ''}; DB_MAX_CONNECTIONS ${dbMax}; ${TENANTS} tenants, ${MEMBERS} rows per read`,
    '',
    table(results),
    '',
    ratioTable(ratios, cpuRatios),
    '',
    `limiter cost per request (difference in server-side CPU, µs): ${Object.entries(limiterCostUs).map(([k, v]) => `${k}: ${Number.isFinite(v) ? v.toFixed(1) : '–'}`).join('; ')}`,
    ''
  ]
  if (inProcess.entitlements) {
    const e = inProcess.entitlements
    lines.push(`entitlements in-process: cached check ${(e.cachedChecksPerS / 1e6).toFixed(1)} M/s; cold check p50 ${e.coldCheckP50Ms.toFixed(2)} ms, p99 ${e.coldCheckP99Ms.toFixed(2)} ms; broadcast propagation p50 ${e.propagationP50Ms.toFixed(1)} ms, p99 ${e.propagationP99Ms.toFixed(1)} ms (${e.propagationSamples} samples)`)
  }
  for (const a of inProcess.audit ?? []) lines.push(`audit appends, ${a.chains} chain(s): ${Math.round(a.appendsPerS)}/s, p50 ${a.p50Ms.toFixed(1)} ms, p99 ${a.p99Ms.toFixed(1)} ms, chains verify: ${a.verified ?? 'not checked'}`)
  if (memory) lines.push(`memory (${memory.soakS} s tenant-read at ${memory.connections} connections, ${Math.round(memory.rps!)} req/s, metrics on): heap used ${memory.heapUsedStartMiB!.toFixed(0)} → peak ${memory.heapUsedPeakMiB!.toFixed(0)} → end ${memory.heapUsedEndMiB!.toFixed(0)} MiB; heap total peak ${memory.heapTotalPeakMiB!.toFixed(0)} MiB; RSS peak ${memory.rssPeakMiB!.toFixed(0)} MiB`)
  if (startup) {
    const s = (ms: number | undefined) => ms === undefined ? '?' : (ms / 1000).toFixed(2)
    lines.push(`start to ready: cold (initialises the folder) ${s(startup.coldMs)} s; warm ${startup.warmMs.map(m => s(m) + ' s').join(', ')}`)
    lines.push(`  phases (s after spawn: embedded Postgres up / listening / ready): ${startup.phases.map(p => `${s(p.embeddedPostgresMs)} / ${s(p.listeningMs)} / ${s(p.readyMs)}`).join('; ')}`)
  }
  for (const [k, v] of Object.entries(skipped)) lines.push(`skipped ${k}: ${v}`)
  lines.push('', checkTable(checks), '', `written: ${path.relative(ROOT, out)}`)
  process.stdout.write(lines.join('\n') + '\n')
}

function round (n: number) { return Math.round(n * 10) / 10 }

function median (xs: number[]) {
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

async function waitForRedis (child: Child, port: number) {
  const deadline = Date.now() + 5000
  for (;;) {
    const ok = await new Promise<boolean>(resolve => {
      const s = net.connect(port, '127.0.0.1')
      s.on('connect', () => s.write('PING\r\n'))
      s.on('data', d => { s.destroy(); resolve(d.toString().startsWith('+PONG')) })
      s.on('error', () => resolve(false))
    })
    if (ok) return
    if (child.proc.exitCode !== null || Date.now() > deadline) throw new Error(`redis-server did not start:\n${child.stderr()}`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

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
