// SIGTERM to a real server process (server.ts, as a replica
// runs it) while load flows and slow requests are in flight. The rolling restart of three
// replicas behind the balancer is in test/cluster.test.ts.
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import http from 'node:http'
import net from 'node:net'
import { after, test } from 'node:test'
import { adminClient, buildTestApp, createTestDatabase, testConfig, waitFor } from './support/app.js'
import { bearer, loginOperator, recordingTenant } from './support/actors.js'
import { tally, type Outcome } from './support/faults.js'
import { spawnServer } from './support/server-process.js'

const db = await createTestDatabase()
const admin = await adminClient(db)

const SHUTDOWN_TIMEOUT_MS = 10_000
// Long enough for a balancer polling readiness every 25 ms to see "draining" and stop
// sending, with slack for a loaded machine; what is sent meanwhile must still be served.
const DRAIN_DELAY_MS = 2000
// How long the load keeps coming after readiness first says draining: a balancer's reaction.
const REACT_MS = 300
const RATE = 100 // tenant GETs per second, open loop
const SLOW = 3 // event batches held in flight by a table lock

/** server.ts on the test database, as a replica runs it; its JSON log lines are collected. */
function startServer () {
  return spawnServer({
    NODE_ENV: 'production',
    LOG_LEVEL: 'info',
    HOST: '127.0.0.1',
    DATABASE_URL: db.runtimeUrl,
    MIGRATION_DATABASE_URL: db.ownerUrl,
    DB_MAX_CONNECTIONS: '10',
    SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS),
    SHUTDOWN_DRAIN_DELAY_MS: String(DRAIN_DELAY_MS),
    // Every request comes from 127.0.0.1: the per-IP limit is not what is under test.
    RATE_LIMIT_MAX: '1000000'
  })
}

type Reply = Outcome & { connection?: string, body?: unknown }

/**
 * One request over a keep-alive agent (node:http, so a reset shows as its error code, and
 * the Connection header the server sent is visible).
 */
function send (
  agent: http.Agent | false,
  port: number,
  kind: string,
  opts: { method?: string, path: string, headers?: Record<string, string>, body?: unknown }
): Promise<Reply> {
  const sentAt = Date.now()
  return new Promise((resolve) => {
    const payload = opts.body === undefined ? undefined : JSON.stringify(opts.body)
    const req = http.request({
      host: '127.0.0.1',
      port,
      agent,
      method: opts.method ?? 'GET',
      path: opts.path,
      headers: { ...opts.headers, ...(payload ? { 'content-type': 'application/json' } : {}) },
      timeout: 15_000
    }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { text += c })
      res.on('error', (err: NodeJS.ErrnoException) =>
        resolve({ kind, sentAt, doneAt: Date.now(), status: 0, contentType: '', error: err.code ?? err.message }))
      res.on('end', () => {
        let body: unknown = text
        try { body = JSON.parse(text) } catch {}
        resolve({
          kind,
          sentAt,
          doneAt: Date.now(),
          status: res.statusCode ?? 0,
          contentType: String(res.headers['content-type'] ?? ''),
          code: (body as { code?: string } | null)?.code,
          connection: res.headers.connection,
          body
        })
      })
    })
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', (err: NodeJS.ErrnoException) =>
      resolve({ kind, sentAt, doneAt: Date.now(), status: 0, contentType: '', error: err.code ?? err.message }))
    req.end(payload)
  })
}

const accepting = (port: number) => new Promise<boolean>(resolve => {
  const s = net.connect(port, '127.0.0.1')
  s.on('connect', () => { s.destroy(); resolve(true) })
  s.on('error', () => resolve(false))
})

test(
  'SIGTERM at 100 req/s with slow requests in flight: readiness drains while the process still serves, every request completes, exit 0',
  { timeout: 90_000 }, async () => {
    // The tenant and its contract are made in-process; the server under test only reads them.
    const setup = await buildTestApp(testConfig(db), { autoClose: false })
    const operator = await loginOperator(setup)
    const tenant = await recordingTenant(setup, operator, { api_requests_per_minute: 1_000_000 })
    await setup.close()

    const server = await startServer()
    const booted = Date.now()
    await waitFor(async () => (await send(false, server.port, 'probe', { path: '/api/v1/health' })).status === 200,
      { timeoutMs: 60_000, intervalMs: 100, what: `the server to be ready (stderr: ${server.stderr()})` })
    console.log(`# server.ts ready in ${Date.now() - booted} ms`)

    const agent = new http.Agent({ keepAlive: true })
    after(() => agent.destroy())
    const auth = bearer(tenant)
    const load: Reply[] = []
    const pending: Array<Promise<Reply>> = []
    let sent = 0
    let stopSendingAt = Infinity
    // Should readiness never turn, the load still ends (and the test fails on its assertions).
    let hardStopAt = Infinity
    const started = Date.now()
    // Open loop: each tick sends what the rate owes by now, whatever is still outstanding.
    const loadDone = new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        const now = Date.now()
        if (now >= Math.min(stopSendingAt, hardStopAt)) {
          clearInterval(timer)
          resolve()
          return
        }
        while (sent < Math.floor((now - started) * RATE / 1000)) {
          sent++
          pending.push(send(agent, server.port, 'tenant', { path: '/api/v1/tenant', headers: auth }).then(r => { load.push(r); return r }))
        }
      }, 10)
    })
    // The signal comes in a steady state. A process still warming up, or starved by a busy
    // machine, lets the open-loop load queue up unread in its sockets; what is still unread
    // when the listener closes is cut, however long the drain delay.
    await waitFor(() => load.length >= RATE * 1.5 && sent - load.length <= 5 && load.slice(-50).every(r => r.doneAt - r.sentAt < 250),
      { timeoutMs: 30_000, intervalMs: 50, what: 'the load to flow with the server keeping up' })

    // The slow requests: event batches whose INSERT waits on a lock another session holds on
    // recording_events. Tenant GETs do not touch the table and keep flowing.
    const locker = await adminClient(db)
    await locker.query('BEGIN')
    await locker.query('LOCK TABLE recording_events IN SHARE MODE')
    const batches = Array.from({ length: SLOW }, (_, i) =>
      [{ id: randomUUID(), recordingId: 'shutdown', type: 'click', occurredAt: new Date().toISOString(), payload: { i } }])
    const slow = batches.map(events =>
      send(agent, server.port, 'events', { method: 'POST', path: '/api/v1/recordings/events', headers: auth, body: { events } }))
    await waitFor(async () => {
      const { rows } = await admin.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM pg_stat_activity ' +
        "WHERE datname = current_database() AND usename = 'govula_app' AND wait_event_type = 'Lock'")
      return rows[0]!.n === SLOW
    }, { what: 'the event batches to wait on the lock' })

    // A balancer's readiness poll, on fresh connections as a prober makes them.
    const probes: Array<{ at: number, status: number, body: unknown, live?: number }> = []
    const probing = { on: true }
    const prober = (async () => {
      while (probing.on) {
        const [ready, live] = await Promise.all([
          send(false, server.port, 'probe', { path: '/api/v1/health' }),
          send(false, server.port, 'probe', { path: '/health' })
        ])
        if (ready.error || live.error) break // the listener has closed
        probes.push({ at: ready.doneAt, status: ready.status, body: ready.body, live: live.status })
        if (ready.status === 503 && stopSendingAt === Infinity) stopSendingAt = Date.now() + REACT_MS
        await new Promise(resolve => setTimeout(resolve, 25))
      }
    })()

    const signalAt = Date.now()
    hardStopAt = signalAt + DRAIN_DELAY_MS + 2000
    server.child.kill('SIGTERM')

    await loadDone
    await waitFor(async () => !(await accepting(server.port)), { timeoutMs: DRAIN_DELAY_MS + 5000, what: 'the listener to close' })
    const closedAt = Date.now()
    probing.on = false
    await prober
    // Only now, with the listener closed, are the slow requests let go.
    await locker.query('ROLLBACK')
    const released = Date.now()
    const slowReplies = await Promise.all(slow)
    await Promise.all(pending)
    const exit = await server.exited

    const inFlightAtSignal = load.filter(r => r.sentAt <= signalAt && r.doneAt >= signalAt)
    const draining = probes.find(p => p.at > signalAt && p.status === 503)
    const afterDraining = draining ? load.filter(r => r.sentAt > draining.at) : []
    console.log(`# ${load.length} tenant GETs (${tally(load)}), ${inFlightAtSignal.length} in flight at SIGTERM ` +
      `plus ${SLOW} slow batches; ` +
      `readiness 503 ${draining ? draining.at - signalAt : '-'} ms after SIGTERM, ${afterDraining.length} GETs sent after that; ` +
      `listener closed at +${closedAt - signalAt} ms; ` +
      `slow batches answered ${Math.max(...slowReplies.map(r => r.doneAt)) - released} ms after the lock was released; ` +
      `exit ${exit.code} at +${exit.at - signalAt} ms`)

    assert.equal(exit.code, 0, `a clean exit (stderr: ${server.stderr()})`)
    assert.ok(exit.at - signalAt < SHUTDOWN_TIMEOUT_MS, `exited ${exit.at - signalAt} ms after SIGTERM, within SHUTDOWN_TIMEOUT_MS`)

    // Every request that was in flight at the signal completed, and nothing got a reset.
    for (const r of slowReplies) {
      assert.equal(r.status, 202, JSON.stringify(r))
      assert.ok(r.doneAt >= released, 'it was held in flight through the close of the listener')
      assert.deepEqual(r.body, { accepted: 1, duplicates: 0 })
      assert.equal(r.connection, 'close', 'the keep-alive connection is closed after the response, not cut under it')
    }
    assert.ok(load.length >= RATE * (signalAt - started) / 1000 * 0.9, `the load ran (${load.length} requests)`)
    assert.deepEqual(load.filter(r => r.error || r.status !== 200).slice(0, 5), [], 'every tenant GET answered 200; no connection error')

    // Readiness turned at once, while the process kept serving.
    assert.ok(draining, 'readiness answered 503 after SIGTERM')
    assert.deepEqual((draining.body as { status: string }).status, 'draining')
    assert.ok(draining.at - signalAt < DRAIN_DELAY_MS - REACT_MS,
      `readiness said draining ${draining.at - signalAt} ms after SIGTERM: before the balancer's reaction could outlast the drain delay`)
    assert.ok(probes.filter(p => p.at > draining.at).every(p => p.status === 503 && p.live === 200),
      'readiness stays 503 and liveness 200 through the drain')
    assert.ok(afterDraining.length >= 10, `${afterDraining.length} tenant GETs sent after readiness said draining were served`)
    assert.ok(closedAt - signalAt >= DRAIN_DELAY_MS, 'the listener stayed open for the drain delay')

    const { rows: [stored] } = await admin.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM recording_events WHERE id = ANY($1)', [batches.map(b => b[0]!.id)])
    assert.equal(stored!.n, SLOW, 'the slow batches were stored')
    const closed = server.lines.filter(l => typeof l.closed === 'string').map(l => l.closed)
    assert.deepEqual(closed, ['scheduler', 'readiness', 'db'], 'plugins closed in reverse order, the pool last')
    assert.deepEqual(server.lines.filter(l => (l.level as number) >= 50), [], 'no error lines')
  })
