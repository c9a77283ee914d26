// Postgres restarted (`pg_ctl restart -m fast`) under 100 writers.
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import type net from 'node:net'
import { after, test } from 'node:test'
import pino from 'pino'
import { CheckFailure, createReadiness } from '../infra/readiness.js'
import { adminClient, buildTestApp, captureLogs, startOwnedPostgres, testConfig, waitFor } from './support/app.js'
import { bearer, loginOperator, recordingTenant } from './support/actors.js'
import { isClean503, tally, type Outcome } from './support/faults.js'
import { startOutsideProber } from './support/outside-prober.js'

const server = await startOwnedPostgres()
after(() => server.stop())

const WRITERS = 100
const PACE_MS = 500 // each writer sends a batch about every 500 ms: about 200 batches a second in all
const READINESS_INTERVAL_MS = 50

const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))

interface Event { id: string, recordingId: string, type: string, occurredAt: string, payload: Record<string, unknown> }
interface Batch { events: Event[], attempts: Outcome[], answer?: { accepted: number, duplicates: number } }

test(
  'Postgres restarted with pg_ctl restart -m fast under 100 writers: no write lost or doubled; readiness 503, liveness 200; ready in 5 s',
  { timeout: 40_000 }, async () => {
    // giveUpAt bounds the writers' last retries, should the service never recover. The hook
    // ends the load first, should the test fail halfway.
    const load = { stopping: false, giveUpAt: Infinity }
    after(() => { load.stopping = true; load.giveUpAt = 0 })
    const logs = captureLogs()
    const app = await buildTestApp(testConfig(server.db, {
      // The service's default pool, five writers to a connection: readiness's checks queue
      // behind the writers, so it is the requests refused a connection that turn it 503 at once.
      DB_MAX_CONNECTIONS: 20,
      READINESS_CHECK_INTERVAL_MS: READINESS_INTERVAL_MS,
      RATE_LIMIT_MAX: 1_000_000,
      LOG_LEVEL: 'warn'
    }), { logs })
    const operator = await loginOperator(app)
    const tenant = await recordingTenant(app, operator)
    await app.listen({ port: 0, host: '127.0.0.1' })
    const base = `http://127.0.0.1:${(app.server.address() as net.AddressInfo).port}`
    const headers = { ...bearer(tenant), 'content-type': 'application/json' }

    const batches: Batch[] = []

    async function post (batch: Batch): Promise<Outcome> {
      const sentAt = Date.now()
      try {
        const res = await fetch(`${base}/api/v1/recordings/events`, {
          method: 'POST', headers, body: JSON.stringify({ events: batch.events }), signal: AbortSignal.timeout(15_000)
        })
        const body = await res.json().catch(() => ({})) as { code?: string, accepted?: number, duplicates?: number }
        if (res.status === 202) batch.answer = { accepted: body.accepted!, duplicates: body.duplicates! }
        return {
          kind: 'events',
          sentAt,
          doneAt: Date.now(),
          status: res.status,
          contentType: res.headers.get('content-type') ?? '',
          code: body.code,
          retryAfter: res.headers.get('retry-after') ?? undefined
        }
      } catch (err) {
        return { kind: 'events', sentAt, doneAt: Date.now(), status: 0, contentType: '', error: (err as Error).name }
      }
    }

    // A writer as a recorder page is one: a batch that is not acknowledged is sent again with
    // the same event ids after Retry-After, and a new batch only once the last one was.
    async function writer (w: number) {
      await sleep(w * PACE_MS / WRITERS) // spread the writers over the pace
      for (let k = 0; !load.stopping; k++) {
        const batch: Batch = {
          events: Array.from({ length: 1 + (k + w) % 3 }, (_, i) =>
            ({ id: randomUUID(), recordingId: `rec-${w}`, type: 'click', occurredAt: new Date().toISOString(), payload: { w, k, i } })),
          attempts: []
        }
        batches.push(batch)
        for (;;) {
          const outcome = await post(batch)
          batch.attempts.push(outcome)
          if (outcome.status === 202 || Date.now() > load.giveUpAt) break
          await sleep(Number(outcome.retryAfter ?? 1) * 1000)
        }
        await sleep(PACE_MS)
      }
    }

    const prober = await startOutsideProber(base, server.adminUrl)
    after(() => prober.stop())
    const probes = prober.probes

    const writers = Array.from({ length: WRITERS }, (_, w) => writer(w))
    const acked = () => batches.filter(b => b.answer).length
    await waitFor(() => acked() >= 200 && probes.some(p => p.ready === 200), { timeoutMs: 10_000, what: 'the load to flow' })

    // The prober polls Postgres itself, so that "ready within 5 s of Postgres" is measured from
    // when it accepted again: from the start of the first attempt that succeeded, the stricter end.
    prober.watchPostgres(true)
    await waitFor(() => prober.pg.length > 0, { what: 'the first sample of Postgres' })
    const restartAt = Date.now()
    const restart = await server.restart('fast')
    const pgCtlDoneAt = Date.now()
    const wentDown = () => prober.pg.find(p => p.sentAt >= restartAt && !p.ok)
    const postgresUp = await waitFor(() => prober.pg.find(p => p.ok && p.sentAt > (wentDown()?.sentAt ?? Infinity))?.sentAt,
      { timeoutMs: 10_000, what: 'Postgres to be seen refusing connections, then accepting them again' })
    prober.watchPostgres(false)
    const downAt = wentDown()!.doneAt

    // The first answer of 200 to a probe sent once Postgres accepted (probes may answer out of order).
    const readyAgain = await waitFor(() => probes.find(p => p.sentAt >= postgresUp && p.ready === 200),
      { timeoutMs: 10_000, what: 'readiness 200 again' })
    // Writes flow again for a while before the load stops (a count, not a sleep).
    const ackedBefore = acked()
    await waitFor(() => acked() >= ackedBefore + 200, { timeoutMs: 10_000, what: 'writes to flow after the restart' })
    load.stopping = true
    load.giveUpAt = Date.now() + 10_000
    await Promise.all(writers)
    await prober.stop()

    const outcomes = batches.flatMap(b => b.attempts)
    const failed = outcomes.filter(o => o.status !== 202)
    const during = probes.filter(p => p.sentAt >= restartAt && p.sentAt <= readyAgain.doneAt)
    const unready = during.filter(p => p.ready === 503)
    const firstUnready = unready[0]
    const events = batches.flatMap(b => b.events)
    const accepted = batches.reduce((n, b) => n + (b.answer?.accepted ?? 0), 0)
    const duplicates = batches.reduce((n, b) => n + (b.answer?.duplicates ?? 0), 0)
    console.log(`# pg_ctl restart -m fast: exit ${restart.code} after ${pgCtlDoneAt - restartAt} ms; ` +
      `Postgres refused from +${downAt - restartAt} ms, accepted again at +${postgresUp - restartAt} ms ` +
      `(outage about ${postgresUp - downAt} ms)`)
    console.log(`# readiness: 503 first at +${firstUnready ? firstUnready.doneAt - restartAt : '-'} ms ` +
      `(failing: ${firstUnready?.failing.join(', ') ?? '-'}), ${unready.length} of ${during.length} probes 503; ` +
      `200 again ${readyAgain.doneAt - postgresUp} ms after Postgres accepted`)
    console.log(`# ${outcomes.length} requests (${tally(outcomes)}) for ${batches.length} batches of ${events.length} events, ` +
      `${batches.filter(b => b.attempts.length > 1).length} batches retried; answers: ${accepted} accepted, ${duplicates} duplicates`)

    assert.equal(restart.code, 0, restart.output)
    assert.ok(downAt < postgresUp, 'Postgres really went away')
    assert.deepEqual(outcomes.filter(o => o.error), [], 'every request got an answer: the process never went away')
    assert.deepEqual(probes.filter(p => p.live !== 200), [], 'liveness answered 200 throughout')
    assert.deepEqual(failed.filter(o => !isClean503(o)), [], 'every non-2xx is a 503 problem+json with Retry-After, never a 500')
    assert.ok(failed.length > 0, 'writers met the outage (else the test proves nothing)')
    assert.ok(firstUnready, 'readiness answered 503 between the restart and its return to 200')
    // Which checks: a round that began before the outage fails only its later ones.
    assert.deepEqual(unready.filter(p => p.failing.length === 0), [], 'every 503 names the checks that failed')
    assert.ok(readyAgain.doneAt - postgresUp <= 5000,
      `ready again ${readyAgain.doneAt - postgresUp} ms after Postgres accepted connections`)
    assert.deepEqual(probes.filter(p => p.sentAt >= readyAgain.doneAt && p.ready !== 200).map(p => p.ready), [],
      'readiness stayed 200 once back')
    assert.deepEqual(logs.lines.filter(l => l.msg === 'unhandled error'), [], 'nothing was treated as an unexpected error')
    assert.deepEqual(batches.filter(b => !b.answer).length, 0, 'every batch was acknowledged in the end')

    const admin = await adminClient(server.db)
    const { rows } = await admin.query<{ id: string, n: number }>(
      'SELECT id, count(*)::int AS n FROM recording_events WHERE tenant_id = $1 GROUP BY id', [tenant.tenant!.id])
    const stored = new Map(rows.map(r => [r.id, r.n]))
    const lost = batches.filter(b => b.answer).flatMap(b => b.events).filter(e => !stored.has(e.id))
    assert.equal(lost.length, 0, `${lost.length} acknowledged events lost`)
    assert.deepEqual(rows.filter(r => r.n !== 1), [], 'no event is stored twice')
    assert.equal(stored.size, events.length, 'every event sent is stored, and nothing else')
    assert.equal(accepted + duplicates, events.length, 'each event was answered once, as accepted or as a duplicate')
    await waitFor(() => app.pg.pool.waitingCount === 0, { what: 'the pool to settle' })
  })

// The restart above found it: under load a round of checks, each waiting for a pool
// connection, took longer than the outage, and readiness answered the previous round's 200
// until the round ended, after Postgres was back.
test('readiness reports a failing check at once, before its round ends; ready again takes a whole round that passes', async () => {
  const envelope = createReadiness(pino({ level: 'silent' }))
  const state = { down: false, release: () => {} }
  envelope.addCheck({
    name: 'database',
    critical: true,
    run: async () => {
      if (state.down) throw new CheckFailure('unreachable')
      return 'reachable'
    }
  })
  // Holds the round while Postgres is down, as a check queued behind requests does.
  envelope.addCheck({
    name: 'queued',
    critical: true,
    run: async () => {
      if (state.down) await new Promise<void>(resolve => { state.release = resolve })
      return 'done'
    }
  })
  await envelope.refresh()
  assert.equal(envelope.report().status, 'ready')

  state.down = true
  const round = envelope.refresh()
  await waitFor(() => envelope.report().status === 'unavailable',
    { timeoutMs: 1000, what: 'the failure to be reported while its round still runs' })
  assert.deepEqual(envelope.report().checks.find(c => c.name === 'database'), { name: 'database', ok: false, detail: 'unreachable' })
  state.down = false
  state.release()
  await round
  assert.equal(envelope.report().status, 'unavailable', 'the round that saw the failure does not make the instance ready')
  await envelope.refresh()
  assert.equal(envelope.report().status, 'ready', 'the next round, which passes, does')
})
