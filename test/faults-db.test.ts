// The pool's connections killed under load, and a slow Postgres.
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { test } from 'node:test'
import type { SessionEnvelope } from '../services/accounts.js'
import { adminClient, buildTestApp, captureLogs, createTestDatabase, testConfig, waitFor } from './support/app.js'
import { bearer, loginOperator, recordingTenant, signup } from './support/actors.js'
import { call, isClean503, listen, openLoop, tally, type Outcome } from './support/faults.js'
import { proxyFor, viaPort } from './support/fault-proxy.js'

const db = await createTestDatabase()
const admin = await adminClient(db)

type App = Awaited<ReturnType<typeof buildTestApp>>

/** Every pool connection of the runtime role on this database (the broadcast listener has its own name). */
const KILL_POOL = 'SELECT pg_terminate_backend(pid) FROM pg_stat_activity ' +
  "WHERE datname = current_database() AND usename = 'govula_app' AND application_name LIKE 'govula-core:%'"

test(
  'all pool connections killed three times under 200 req/s: no crash, only clean 503s within 2 s of a kill, no acknowledged write lost',
  { timeout: 30_000 }, async () => {
    const logs = captureLogs()
    const app = await buildTestApp(testConfig(db, { DB_MAX_CONNECTIONS: 10, RATE_LIMIT_MAX: 1_000_000, LOG_LEVEL: 'warn' }), { logs })
    const operator = await loginOperator(app)
    const tenant = await recordingTenant(app, operator, { api_requests_per_minute: 1_000_000 })
    const base = await listen(app)
    const auth = { ...bearer(tenant), 'content-type': 'application/json' }

    const RATE = 200 // requests per second
    const DURATION_MS = 5500
    // Kills 2.2 s apart, so "every 5xx within 2 s of the latest kill" can fail.
    const KILL_AT_MS = [500, 2700, 4900]

    const batches = new Map<number, { events: Array<{ id: string }>, outcome?: Outcome }>()
    const kills: number[] = []
    const killed: Array<Promise<number>> = []
    const started = Date.now()
    const outcomes = await openLoop({
      rate: RATE,
      durationMs: DURATION_MS,
      steps: KILL_AT_MS.map(atMs => ({
        atMs,
        run: () => {
          kills.push(Date.now())
          killed.push(admin.query(KILL_POOL).then(r => r.rowCount ?? 0))
        }
      })),
      send (k) {
        if (k % 2 === 0) return call(base, 'tenant', { url: '/api/v1/tenant', headers: bearer(tenant) })
        const events = Array.from({ length: 1 + (k % 3) }, () =>
          ({ id: randomUUID(), recordingId: `rec-${k % 7}`, type: 'click', occurredAt: new Date().toISOString(), payload: { k } }))
        const batch: { events: typeof events, outcome?: Outcome } = { events }
        batches.set(k, batch)
        return call(base, 'events', { url: '/api/v1/recordings/events', method: 'POST', headers: auth, body: JSON.stringify({ events }) })
          .then(o => { batch.outcome = o; return o })
      }
    })
    const ok = outcomes.filter(o => o.status >= 200 && o.status < 300)
    const failed = outcomes.filter(o => !(o.status >= 200 && o.status < 300))
    const bursts = kills.map((k, i) => {
      const next = kills[i + 1] ?? Infinity
      const mine = failed.filter(o => o.doneAt >= k && o.doneAt < next)
      return mine.length ? Math.max(...mine.map(o => o.doneAt)) - k : 0
    })
    const terminated = await Promise.all(killed)
    console.log(`# ${outcomes.length} requests in ${Date.now() - started} ms (${tally(outcomes)}); ` +
      `kills ended ${terminated.join(', ')} connections; 5xx for ${bursts.join(', ')} ms after them`)

    assert.equal(kills.length, KILL_AT_MS.length)
    assert.ok(terminated.every(c => c >= 1), `every kill terminated pool connections (${terminated.join(', ')})`)
    assert.ok(outcomes.length >= RATE * DURATION_MS / 1000 * 0.9, `the load ran (${outcomes.length} requests)`)
    assert.deepEqual(outcomes.filter(o => o.error), [], 'no request lost its connection: the process never went away')
    assert.deepEqual(failed.filter(o => !isClean503(o)), [], 'every non-2xx is a 503 problem+json with Retry-After, never a 500')
    for (const o of failed) {
      const latestKill = Math.max(...kills.filter(k => k <= o.doneAt))
      assert.ok(o.doneAt - latestKill <= 2000, `a 5xx ${o.doneAt - latestKill} ms after the latest kill`)
    }
    assert.ok(ok.length >= outcomes.length * 0.5, 'the service kept serving between the kills')
    assert.equal((await fetch(`${base}/health`)).status, 200, 'alive')
    assert.deepEqual(logs.lines.filter(l => l.msg === 'unhandled error'), [], 'nothing was treated as an unexpected error')

    // 0 lost acknowledged writes: every event of every 202 is stored.
    const stored = async () => {
      const { rows } = await admin.query<{ id: string, n: number }>(
        'SELECT id, count(*) OVER (PARTITION BY id)::int AS n FROM recording_events WHERE tenant_id = $1', [tenant.tenant!.id])
      assert.ok(rows.every(r => r.n === 1), 'no event is stored twice')
      return new Set(rows.map(r => r.id))
    }
    const acked = [...batches.values()].filter(b => b.outcome!.status === 202)
    const afterLoad = await stored()
    const lost = acked.flatMap(b => b.events).filter(e => !afterLoad.has(e.id))
    assert.equal(lost.length, 0, `${lost.length} acknowledged events lost`)

    // A client retries what got a 503 (the event ids make that safe): then everything is stored exactly once.
    for (const b of batches.values()) {
      if (b.outcome!.status === 202) continue
      const retry = await app.inject({
        method: 'POST', url: '/api/v1/recordings/events', headers: bearer(tenant), payload: { events: b.events }
      })
      assert.equal(retry.statusCode, 202, retry.body)
      const { accepted, duplicates } = retry.json() as { accepted: number, duplicates: number }
      assert.equal(accepted + duplicates, b.events.length)
    }
    const all = [...batches.values()].flatMap(b => b.events.map(e => e.id))
    const final = await stored()
    assert.equal(final.size, all.length)
    for (const id of all) assert.ok(final.has(id))
    await waitFor(() => app.pg.pool.waitingCount === 0 && app.pg.pool.idleCount === app.pg.pool.totalCount, { what: 'the pool to settle' })
  })

/** Fires `count` tenant GETs at once and returns what each got and how long it took. */
async function burst (app: App, actor: SessionEnvelope, count: number) {
  return Promise.all(Array.from({ length: count }, async () => {
    const started = Date.now()
    const res = await app.inject({ url: '/api/v1/tenant', headers: bearer(actor) })
    return { res, ms: Date.now() - started }
  }))
}

const STATEMENT_MS = 500
const CONNECT_MS = 500
const POOL = 3

async function slowApp () {
  const proxy = await proxyFor(db.runtimeUrl)
  const logs = captureLogs()
  const app = await buildTestApp(testConfig(db, {
    DATABASE_URL: viaPort(db.runtimeUrl, proxy.port),
    DB_MAX_CONNECTIONS: POOL,
    DB_STATEMENT_TIMEOUT: STATEMENT_MS,
    DB_CONNECTION_TIMEOUT: CONNECT_MS,
    LOG_LEVEL: 'warn'
  }), { logs })
  const actor = await signup(app)
  // Open the whole pool, so the fault meets both open connections and new ones.
  for (const { res } of await burst(app, actor, POOL * 2)) assert.equal(res.statusCode, 200)
  return { app, proxy, actor, logs }
}

/**
 * Fires POOL × 3 tenant GETs at once under the fault (so some find the pool busy), takes what
 * answered within the bound, heals the fault, and checks the whole pool serves again within
 * 5 s; then that every request had failed fast with a clean 503.
 */
async function assertFailsFastThenRecovers (app: App, actor: SessionEnvelope, heal: () => void, logs: ReturnType<typeof captureLogs>) {
  // A checkout wait, then one statement up to the client-side timeout (statement + 1 s), plus slack for the machine.
  const bound = CONNECT_MS + STATEMENT_MS + 1000 + 1000
  const settled: Array<{ status: number, contentType: string, code?: string, retryAfter?: string, ms: number }> = []
  const started = Date.now()
  const requests = Array.from({ length: POOL * 3 }, () => app.inject({ url: '/api/v1/tenant', headers: bearer(actor) }).then((res) => {
    settled.push({
      status: res.statusCode,
      contentType: String(res.headers['content-type']),
      code: (res.json() as { code?: string }).code,
      retryAfter: res.headers['retry-after'] as string | undefined,
      ms: Date.now() - started
    })
  }))
  // A deadline, not a synchronisation: whatever has not answered by then has broken the bound.
  let deadline: NodeJS.Timeout | undefined
  await Promise.race([Promise.all(requests), new Promise(resolve => { deadline = setTimeout(resolve, bound + 500) })])
  clearTimeout(deadline)
  const inTime = [...settled]
  console.log(`# under the fault, within ${bound + 500} ms: ${inTime.map(r => `${r.status}/${r.ms}ms`).join(' ') || 'nothing'}; ` +
    `${requests.length - inTime.length} still waiting`)

  heal()
  const healed = Date.now()
  await Promise.all(requests)
  if (settled.length > inTime.length) {
    console.log(`# after the fault ended: ${settled.slice(inTime.length).map(r => `${r.status}/${r.ms}ms`).join(' ')}`)
  }
  await waitFor(async () => (await burst(app, actor, POOL * 2)).every(r => r.res.statusCode === 200),
    { timeoutMs: 5000, what: 'the whole pool to serve again' })
  console.log(`# pool fully usable ${Date.now() - healed} ms after the fault ended`)
  assert.equal(app.pg.pool.waitingCount, 0)
  assert.deepEqual(logs.lines.filter(l => l.msg === 'unhandled error'), [], 'no 500s')

  assert.equal(inTime.length, requests.length,
    `${requests.length - inTime.length} of ${requests.length} requests were still waiting ${bound + 500} ms into the fault`)
  for (const r of inTime) {
    assert.deepEqual([r.status, r.code, r.retryAfter], [503, 'SERVICE_UNAVAILABLE', '1'], `answered ${r.status} after ${r.ms} ms`)
    assert.match(r.contentType, /^application\/problem\+json/)
    assert.ok(r.ms <= bound, `answered in ${r.ms} ms, bound ${bound} ms`)
  }
}

test(
  'Postgres slow, stalled on locks: DB_STATEMENT_TIMEOUT ends statements, DB_CONNECTION_TIMEOUT checkouts, a clean 503; pool usable in 5 s',
  { timeout: 20_000 }, async () => {
    const { app, actor, logs } = await slowApp()
    const locker = await adminClient(db)
    // Every tenant GET starts with the session lookup: with the table locked, each statement waits in Postgres.
    await locker.query('BEGIN')
    await locker.query('LOCK TABLE auth_sessions IN ACCESS EXCLUSIVE MODE')
    await assertFailsFastThenRecovers(app, actor, () => { locker.query('ROLLBACK').catch(() => {}) }, logs)
  })

// A slow or stalled network is not something Postgres's statement_timeout sees: these two hold
// the client-side DB_QUERY_TIMEOUT (here the default, statement + 1 s).
test(
  'Postgres slow, 2 s of network latency: requests fail within the configured timeouts with a clean 503; the pool is usable within 5 s',
  { timeout: 20_000 }, async () => {
    const { app, proxy, actor, logs } = await slowApp()
    proxy.latency(2000)
    await assertFailsFastThenRecovers(app, actor, () => proxy.heal(), logs)
  })

test(
  'Postgres stalled (bytes held, connections open): requests fail within the configured timeouts, a clean 503; pool usable within 5 s',
  { timeout: 20_000 }, async () => {
    const { app, proxy, actor, logs } = await slowApp()
    proxy.stall()
    await assertFailsFastThenRecovers(app, actor, () => proxy.heal(), logs)
  })
