// End to end through a real cluster on this machine (scripts/cluster-lib.ts, what
// `npm run cluster` runs): nginx → 3 replicas (separate processes) → PgBouncer in transaction
// mode → the run's Postgres, with Redis and the entitlement broadcast on.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { rm } from 'node:fs/promises'
import { after, before, test } from 'node:test'
import { clusterBinaries, startCluster, type Cluster } from '../scripts/cluster-lib.js'
import { queryOnce, runEnv, tempDir, waitFor } from './support/app.js'
import { PASSWORD, signupAt } from './support/actors.js'

const missing = Object.entries(clusterBinaries()).filter(([, bin]) => !bin).map(([name]) => name === 'redis' ? 'redis-server' : name)
if (missing.length && process.env.CI) {
  throw new Error(`${missing.join(', ')} not installed, and CI must run the cluster test (apt-get install -y ${missing.join(' ')})`)
}
const skip = missing.length ? `${missing.join(', ')} not installed: cluster test skipped (apt-get install -y ${missing.join(' ')})` : false
if (skip) console.log(`# ${skip}`)

const OPERATOR = { email: `cluster-operator-${process.pid}@example.test`, password: 'operator password 1' }
let cluster: Cluster
let dir: string
let failed = false

before(async () => {
  if (skip) return
  dir = await tempDir('govula-cluster-')
  const started = Date.now()
  cluster = await startCluster({
    adminUrl: runEnv('TEST_ADMIN_URL'),
    template: runEnv('TEST_TEMPLATE_DB'),
    // Named after the template, so the run's cleanup drops it even if this file dies.
    database: `${runEnv('TEST_TEMPLATE_DB')}_cluster_${randomBytes(3).toString('hex')}`,
    ownerPassword: runEnv('TEST_OWNER_PASSWORD'),
    appPassword: runEnv('TEST_APP_PASSWORD'),
    dropDatabaseOnStop: true,
    dir,
    lbPort: 0,
    baseEnv: { PATH: process.env.PATH },
    onUnexpectedExit: (replica, reason) => console.log(`# replica ${replica.index} stopped unexpectedly: ${reason.replace(/\n/g, '\n# ')}`),
    appEnv: {
      OPERATOR_BOOTSTRAP_EMAIL: OPERATOR.email,
      OPERATOR_BOOTSTRAP_PASSWORD: OPERATOR.password,
      // Every request comes from 127.0.0.1: the per-IP limits are not what is under test.
      RATE_LIMIT_MAX: '100000',
      AUTH_RATE_LIMIT_MAX: '1000',
      // One user spends the tenant's whole budget in the 60-of-150 step.
      TENANT_RATE_LIMIT_USER_SHARE: '100',
      // The exact 60-of-150 count needs every increment to reach the shared Redis; the 100 ms
      // default would let a slow round trip on a busy CI machine fall back to a local counter.
      REDIS_COMMAND_TIMEOUT_MS: '2000'
    }
  })
  console.log(`# cluster ready in ${Date.now() - started} ms: ${cluster.url}, ` +
    `replicas ${cluster.replicas.map(r => r.port).join(' ')}, pgbouncer ${cluster.pgbouncer.port}`)
}, { timeout: 90_000 })

after(async () => {
  if (skip) return
  if (!cluster) {
    if (dir) console.log(`# the cluster did not start; its configs and logs are kept in ${dir}`)
    return
  }
  if (failed) {
    for (const file of [...cluster.replicas.map(r => r.logFile), `${dir}/nginx.log`, `${dir}/pgbouncer.log`]) {
      let text = ''
      try { text = readFileSync(file, 'utf8').trimEnd().split('\n').slice(-15).join('\n') } catch {}
      console.log(`# --- ${file}\n${text.replace(/^/gm, '# ')}`)
    }
  }
  await cluster.stop()
  if (!failed) await rm(dir, { recursive: true, force: true })
})

/** A test whose failure keeps the cluster's logs (printed in after()). */
function step (name: string, fn: () => Promise<void>) {
  test(name, { skip }, async () => {
    try {
      await fn()
    } catch (err) {
      failed = true
      throw err
    }
  })
}

interface Reply { status: number, body: any, upstream: string | null }

async function call (base: string, method: string, url: string, opts: { token?: string, body?: unknown } = {}): Promise<Reply> {
  const res = await fetch(base + url, {
    method,
    headers: {
      ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
      ...(opts.body !== undefined ? { 'content-type': 'application/json' } : {})
    },
    body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
    signal: AbortSignal.timeout(10_000)
  })
  const text = await res.text()
  let body: unknown = text
  try { body = JSON.parse(text) } catch {}
  return { status: res.status, body, upstream: res.headers.get('x-upstream-addr') }
}

const lb = (method: string, url: string, opts?: { token?: string, body?: unknown }) => call(cluster.url, method, url, opts)

let operatorToken: string | undefined
async function operator () {
  // The bootstrap runs in the background once the first readiness round is done.
  operatorToken ??= (await waitFor(async () => {
    const res = await lb('POST', '/api/v1/auth/login', { body: OPERATOR })
    return res.status === 200 ? res.body.accessToken as string : null
  }, { timeoutMs: 15_000, intervalMs: 200, what: 'the bootstrapped operator to log in' }))
  return operatorToken
}

const portOf = (upstream: string | null) => upstream?.split(', ').at(-1)?.split(':').at(-1)

step('sign up, log in and read through the balancer; round robin over all replicas, each pooled through PgBouncer', async () => {
  const user = await signupAt(cluster.url)
  const login = await lb('POST', '/api/v1/auth/login', { body: { email: user.user.email, password: PASSWORD } })
  assert.equal(login.status, 200, JSON.stringify(login.body))
  assert.equal(login.body.tenant.id, user.tenant!.id)
  const served = new Set<string>()
  for (let i = 0; i < 6; i++) {
    const read = await lb('GET', '/api/v1/tenant', { token: login.body.accessToken })
    assert.equal(read.status, 200, JSON.stringify(read.body))
    assert.equal(read.body.id, user.tenant!.id)
    served.add(portOf(read.upstream)!)
  }
  assert.deepEqual([...served].sort(), cluster.replicas.map(r => String(r.port)).sort(), 'round robin reaches every replica')

  const pools = await queryOnce<{ database: string, pool_mode: string }>(cluster.pgbouncer.statsUrl, 'SHOW POOLS')
  assert.equal(pools.find(p => p.database === cluster.database)?.pool_mode, 'transaction')
  const clients = await queryOnce<{ database: string, application_name: string }>(cluster.pgbouncer.statsUrl, 'SHOW CLIENTS')
  const names = new Set(clients.filter(c => c.database === cluster.database && c.application_name.startsWith('govula-core:'))
    .map(c => c.application_name))
  assert.equal(names.size, cluster.replicas.length, 'every replica\'s pool connects through PgBouncer')
  const [timeout] = await queryOnce<{ statement_timeout: string }>(cluster.pgbouncer.url, 'SHOW statement_timeout')
  assert.equal(timeout!.statement_timeout, '10s', 'the role setting stands in for the dropped startup parameter')
  const listeners = await queryOnce<{ n: number }>(runEnv('TEST_ADMIN_URL'),
    // By name alone: the runtime login's statement text is not recorded (track_activities off).
    `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = '${cluster.database}' AND application_name = 'govula-broadcast'`)
  assert.equal(listeners[0]!.n, cluster.replicas.length, 'each replica LISTENs on a direct connection')
})

step('a downgrade through the balancer is denied on every replica within 1 s', async () => {
  const op = await operator()
  const user = await signupAt(cluster.url)
  const recordingMode = (base: string) =>
    call(base, 'GET', '/api/v1/entitlements/check?feature=recording_mode', { token: user.accessToken })
      .then(r => { assert.equal(r.status, 200, JSON.stringify(r.body)); return r.body.allowed as boolean })
  const everywhere = [cluster.url, ...cluster.replicas.map(r => r.url)]

  const pro = await lb('PUT', `/api/v1/operator/tenants/${user.tenant!.id}/plan`, { token: op, body: { plan: 'pro' } })
  assert.equal(pro.status, 200, JSON.stringify(pro.body))
  // Every replica now holds the ALLOW in its cache (60 s TTL): only the broadcast can clear it.
  for (const base of everywhere) assert.equal(await recordingMode(base), true, base)

  const free = await lb('PUT', `/api/v1/operator/tenants/${user.tenant!.id}/plan`, { token: op, body: { plan: 'free' } })
  assert.equal(free.status, 200, JSON.stringify(free.body))
  const changed = Date.now()
  await waitFor(async () => (await Promise.all(everywhere.map(recordingMode))).every(allowed => !allowed),
    { timeoutMs: 1000, intervalMs: 20, what: 'the denial on every replica' })
  console.log(`# denial seen on every replica ${Date.now() - changed} ms after the downgrade answered`)
})

step('the per-tenant limit holds across the cluster: exactly 60 of 150 requests through the balancer', async () => {
  const op = await operator()
  const user = await signupAt(cluster.url)
  const contract = await lb('PUT', `/api/v1/operator/tenants/${user.tenant!.id}/contract`, {
    token: op,
    body: {
      features: { api_requests_per_minute: 60 },
      startsAt: new Date(Date.now() - 60_000).toISOString(),
      endsAt: new Date(Date.now() + 3_600_000).toISOString()
    }
  })
  assert.equal(contract.status, 200, JSON.stringify(contract.body))

  const replies: Reply[] = []
  let next = 0
  await Promise.all(Array.from({ length: 25 }, async () => {
    while (next < 150) {
      next++
      replies.push(await lb('GET', '/api/v1/tenant', { token: user.accessToken }))
    }
  }))
  const count = (status: number) => replies.filter(r => r.status === status).length
  assert.deepEqual({ ok: count(200), limited: count(429), total: replies.length }, { ok: 60, limited: 90, total: 150 })
  assert.equal(new Set(replies.map(r => portOf(r.upstream))).size, cluster.replicas.length, 'all replicas took part')
})

step('a rolling restart of all three replicas at 100 req/s fails no request', async () => {
  const op = await operator()
  const user = await signupAt(cluster.url)
  const plan = await lb('PUT', `/api/v1/operator/tenants/${user.tenant!.id}/plan`, { token: op, body: { plan: 'enterprise' } })
  assert.equal(plan.status, 200, JSON.stringify(plan.body))

  const RATE = 100 // tenant GETs per second through the balancer, open loop
  interface Sent { sentAt: number, doneAt: number, reply?: Reply, error?: string }
  const outcomes: Sent[] = []
  const pending: Array<Promise<void>> = []
  let sending = true
  let sent = 0
  const started = Date.now()
  // Open loop: each tick sends what the rate owes by now, however slow the answers are, so
  // the load does not ease off while a replica is away.
  const load = new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      if (!sending) {
        clearInterval(timer)
        resolve()
        return
      }
      while (sent < Math.floor((Date.now() - started) * RATE / 1000)) {
        sent++
        const sentAt = Date.now()
        pending.push(lb('GET', '/api/v1/tenant', { token: user.accessToken }).then(
          reply => { outcomes.push({ sentAt, doneAt: Date.now(), reply }) },
          (err: Error) => { outcomes.push({ sentAt, doneAt: Date.now(), error: `${err.name}: ${err.message}` }) }))
      }
    }, 10)
  })
  const servedBy = (port: number, since: number) =>
    outcomes.filter(o => o.sentAt >= since && portOf(o.reply?.upstream ?? null) === String(port)).length

  const rounds: Array<{ replica: number, exitCode: number | null, stopMs: number, bootMs: number, backMs: number, newPid: boolean }> = []
  try {
    await waitFor(() => outcomes.length >= RATE, { timeoutMs: 10_000, what: 'traffic to flow' })
    // One at a time, each only once the previous new process is ready and taking traffic.
    for (const replica of cluster.replicas) {
      const oldPid = replica.pid
      const began = Date.now()
      const exitCode = await replica.stop()
      const stopped = Date.now()
      await replica.start()
      const ready = Date.now()
      await waitFor(() => servedBy(replica.port, stopped) >= 10,
        { timeoutMs: 15_000, what: `replica ${replica.index}'s new process to take traffic` })
      rounds.push({
        replica: replica.index,
        exitCode,
        stopMs: stopped - began,
        bootMs: ready - stopped,
        backMs: Date.now() - ready,
        newPid: replica.pid !== oldPid
      })
    }
  } finally {
    sending = false
    await load
    await Promise.all(pending)
  }
  const elapsed = Date.now() - started

  const failures = outcomes.filter(o => o.error || o.reply!.status !== 200)
    .map(o => o.error ?? `${o.reply!.status} via ${o.reply!.upstream}: ${JSON.stringify(o.reply!.body).slice(0, 200)}`)
  const retried = outcomes.filter(o => o.reply?.upstream?.includes(',')).length
  const slowest = Math.max(...outcomes.map(o => o.doneAt - o.sentAt))
  console.log(`# rolling restart: ${outcomes.length} requests in ${elapsed} ms, ${failures.length} failed, ` +
    `${retried} retried by nginx, slowest ${slowest} ms; ` +
    rounds.map(r => `replica ${r.replica}: exit ${r.exitCode} after ${r.stopMs} ms, ready ${r.bootMs} ms later, ` +
      `taking traffic ${r.backMs} ms after that`).join('; '))
  assert.deepEqual(failures.slice(0, 5), [], `${failures.length} of ${outcomes.length} requests failed`)
  assert.equal(rounds.length, cluster.replicas.length, 'every replica was restarted')
  for (const r of rounds) {
    assert.equal(r.exitCode, 0, `replica ${r.replica}'s old process shut down gracefully`)
    assert.ok(r.newPid, `replica ${r.replica} runs a new process`)
  }
  assert.ok(outcomes.length >= RATE * elapsed / 1000 * 0.9, `the load held its rate (${outcomes.length} requests in ${elapsed} ms)`)
})
