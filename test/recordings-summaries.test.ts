import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { test } from 'node:test'
import { LIST_FIRST_SQL } from '../services/recordings.js'
import type { SessionEnvelope } from '../services/accounts.js'
import { adminClient, buildTestApp, createTestDatabase, testConfig, waitFor } from './support/app.js'
import { bearer, loginOperator, recordingTenant } from './support/actors.js'

// The recordings list reads per-recording summaries kept by the ingest and purge statements
// (0010_recording_summaries.sql), never the events themselves. Every list below is read while a
// superuser holds an ACCESS EXCLUSIVE lock on recording_events: a list that read an event would
// wait for it and answer 503 at DB_STATEMENT_TIMEOUT.
const db = await createTestDatabase()
const app = await buildTestApp(testConfig(db, {
  DB_STATEMENT_TIMEOUT: 2000,
  ENABLE_INTERNAL_CRON: true,
  CRON_SECRET: 'k',
  JOB_PURGE_RECORDINGS_INTERVAL_S: 1
}))
const operator = await loginOperator(app)
const admin = await adminClient(db)
const locker = await adminClient(db)

const DAY = 86_400_000

/** Ingest far above anything a test here sends. */
const UNTHROTTLED = { recording_events_per_minute: 10_000_000 }

interface Ev { id: string, recordingId: string, type: string, occurredAt: string, payload: Record<string, unknown> }
const event = (recordingId: string, at = Date.now()): Ev =>
  ({ id: randomUUID(), recordingId, type: 'click', occurredAt: new Date(at).toISOString(), payload: { x: 1 } })

async function ingest (t: SessionEnvelope, events: Ev[]) {
  const res = await app.inject({ method: 'POST', url: '/api/v1/recordings/events', headers: bearer(t), payload: { events } })
  assert.equal(res.statusCode, 202, res.body)
  return res.json() as { accepted: number, duplicates: number }
}

interface Listed { recordingId: string, events: number, firstAt: string, lastAt: string }

/** What the list must say, aggregated from the stored events (as a superuser). */
async function truth (t: SessionEnvelope): Promise<Listed[]> {
  const { rows } = await admin.query<{ recording_id: string, events: number, first_at: Date, last_at: Date }>(`
    SELECT recording_id, count(*)::int AS events, min(occurred_at) AS first_at, max(occurred_at) AS last_at
      FROM recording_events WHERE tenant_id = $1 GROUP BY recording_id ORDER BY last_at DESC, recording_id DESC`, [t.tenant!.id])
  return rows.map(r => ({
    recordingId: r.recording_id,
    events: r.events,
    firstAt: r.first_at.toISOString(),
    lastAt: r.last_at.toISOString()
  }))
}

/** Every page of GET /api/v1/recordings, read while no statement can touch recording_events. */
async function walk (t: SessionEnvelope, limit = 500) {
  const pages: Listed[][] = []
  await locker.query('BEGIN')
  await locker.query('LOCK TABLE recording_events IN ACCESS EXCLUSIVE MODE')
  try {
    let cursor: string | null = null
    do {
      const res: Awaited<ReturnType<typeof app.inject>> = await app.inject({
        url: `/api/v1/recordings?limit=${limit}${cursor ? `&cursor=${cursor}` : ''}`,
        headers: bearer(t)
      })
      assert.equal(res.statusCode, 200, res.body)
      const body = res.json() as { recordings: Listed[], nextCursor: string | null }
      assert.ok(body.recordings.length <= limit)
      pages.push(body.recordings)
      cursor = body.nextCursor
    } while (cursor)
  } finally {
    await locker.query('COMMIT')
  }
  return { pages, all: pages.flat() }
}

test(
  'counts and bounds stay exact: retried, mixed and self-duplicating batches, and concurrent overlapping batches, count each event once',
  async () => {
    const t = await recordingTenant(app, operator, UNTHROTTLED)
    const base = Date.parse('2025-05-01T12:00:00.000Z')
    const batch = [event('a', base + 5), event('a', base + 1), event('a', base + 9), event('b', base + 3)]
    assert.deepEqual(await ingest(t, batch), { accepted: 4, duplicates: 0 })
    assert.deepEqual(await ingest(t, batch), { accepted: 0, duplicates: 4 }, 'a retry')
    const older = event('a', base - 100)
    assert.deepEqual(await ingest(t, [...batch.slice(0, 2), older]), { accepted: 1, duplicates: 2 }, 'mixed')
    const twice = event('b', base + 50)
    assert.deepEqual(await ingest(t, [twice, { ...twice }]), { accepted: 1, duplicates: 1 }, 'one id twice in a batch')
    assert.deepEqual((await walk(t)).all, [
      { recordingId: 'b', events: 2, firstAt: new Date(base + 3).toISOString(), lastAt: new Date(base + 50).toISOString() },
      { recordingId: 'a', events: 4, firstAt: new Date(base - 100).toISOString(), lastAt: new Date(base + 9).toISOString() }
    ])

    // 16 batches at once over 3 recordings, drawing on one shared set of 40 events (so most
    // events arrive in several batches at the same time), plus 2 events of their own each.
    const shared = Array.from({ length: 40 }, (_, i) => event(['c', 'd', 'e'][i % 3]!, base + 1000 + i * 7))
    const results = await Promise.all(Array.from({ length: 16 }, (_, i) => {
      const pick = shared.filter((_, j) => (j * 7 + i) % 3 !== 0)
      return ingest(t, [...pick, event('c', base + 5000 + i), event('e', base - 5000 - i)])
    }))
    const stored = (await truth(t)).reduce((n, r) => n + r.events, 0)
    assert.equal(stored, 6 + 40 + 32)
    assert.equal(results.reduce((n, r) => n + r.accepted, 0), 40 + 32, 'every event stored once, by exactly one batch')
    assert.deepEqual((await walk(t)).all, await truth(t))
  })

test('pagination walks every recording exactly once, most recent first, ties on lastAt ordered by recordingId', async () => {
  const t = await recordingTenant(app, operator, UNTHROTTLED)
  const base = Date.parse('2025-06-01T00:00:00.000Z')
  // 23 recordings; several end at the same instant.
  const events = Array.from({ length: 23 }, (_, i) => {
    const id = `r-${String(i).padStart(2, '0')}`
    return [event(id, base + Math.floor(i / 3) * 1000), event(id, base - i)]
  }).flat()
  await ingest(t, events)
  const { pages, all } = await walk(t, 4)
  assert.equal(pages.length, 6)
  assert.deepEqual(pages.map(p => p.length), [4, 4, 4, 4, 4, 3])
  assert.equal(new Set(all.map(r => r.recordingId)).size, 23, 'no recording twice')
  assert.deepEqual(all, await truth(t), 'all of them, in order')
  const bad = await app.inject({ url: '/api/v1/recordings?cursor=bm9wZQ', headers: bearer(t) })
  assert.equal(bad.statusCode, 400)
  assert.equal(bad.json().errors[0].field, 'querystring.cursor')
})

test('the list\'s plan reads the summaries\' index for one page, whatever the number of events', async () => {
  const t = await recordingTenant(app, operator, UNTHROTTLED)
  // 2,000 recordings of 10 events each, straight into the table (the triggers summarise them).
  await admin.query(`INSERT INTO recording_events (tenant_id, id, recording_id, type, occurred_at, payload)
    SELECT $1, gen_random_uuid(), 'r-' || (i % 2000), 'click', date_trunc('milliseconds', now() - i * interval '1 second'), '{}'
      FROM generate_series(1, 20000) i`, [t.tenant!.id])
  await admin.query('ANALYZE recording_summaries')
  const explain = `EXPLAIN (ANALYZE, FORMAT JSON) ${LIST_FIRST_SQL}`.replace('$1', `'${t.tenant!.id}'`).replace('$2', '101')
  const { rows: [{ 'QUERY PLAN': [plan] }] } = await admin.query(explain)
  const nodes: Array<Record<string, unknown>> = []
  const visit = (n: Record<string, unknown>) => {
    nodes.push(n)
    for (const c of (n.Plans as Array<Record<string, unknown>> | undefined) ?? []) visit(c)
  }
  visit(plan.Plan)
  assert.ok(nodes.every(n => n['Relation Name'] !== 'recording_events'), 'no node reads recording_events')
  const scan = nodes.find(n => n['Relation Name'] === 'recording_summaries')!
  assert.equal(scan['Node Type'], 'Index Scan', JSON.stringify(plan))
  assert.equal(scan['Index Name'], 'recording_summaries_recent_idx')
  assert.ok(Number(scan['Actual Rows']) <= 101, `rows read: ${scan['Actual Rows']}`)
  const first = await walk(t, 100)
  assert.equal(first.all.length, 2000)
  assert.ok(first.all.every(r => r.events === 10))
})

/** One run of the purge-recordings job through the internal cron mount (a fresh tick). */
async function purge () {
  return waitFor(async () => {
    const res = await app.inject({ method: 'POST', url: '/api/internal/cron/purge-recordings', headers: { authorization: 'Bearer k' } })
    assert.equal(res.statusCode, 200, res.body)
    return res.json().ran ? res.json().result as { deleted: number } : undefined
  }, { what: 'a fresh purge tick' })
}

test(
  'the retention purge keeps the summaries: counts fall, firstAt moves to the oldest event left, a recording purged whole leaves the list',
  async () => {
    const t = await recordingTenant(app, operator, { ...UNTHROTTLED, recording_retention_days: 7 })
    const now = Date.now()
    await ingest(t, [
      ...[10, 9, 3, 1].map(d => event('x', now - d * DAY)),
      ...[12, 11].map(d => event('y', now - d * DAY)),
      event('z', now - 2 * DAY)
    ])
    const before = await walk(t)
    assert.deepEqual(before.all.map(r => [r.recordingId, r.events]), [['x', 4], ['z', 1], ['y', 2]])

    assert.ok((await purge()).deleted >= 4)
    const after = await walk(t)
    assert.deepEqual(after.all, await truth(t))
    assert.deepEqual(after.all.map(r => [r.recordingId, r.events]), [['x', 2], ['z', 1]])
    assert.equal(after.all.find(r => r.recordingId === 'x')!.firstAt, new Date(now - 3 * DAY).toISOString())

    // A purge while batches of the same recordings, old and new events, arrive.
    const batches = Array.from({ length: 12 }, (_, i) =>
      [event('x', now - (8 + i % 3) * DAY), event('x', now - i * 1000), event('w', now - (i % 2 ? 9 : 1) * DAY)])
    const [, ...ingested] = await Promise.all([purge(), ...batches.map(b => ingest(t, b))])
    assert.equal(ingested.length, 12)
    assert.deepEqual((await walk(t)).all, await truth(t), 'exact after a purge raced with ingests')
    await purge()
    const final = await walk(t)
    assert.deepEqual(final.all, await truth(t))
    assert.ok(final.all.every(r => Date.parse(r.firstAt) >= now - 7 * DAY - 60_000), 'nothing older than the retention is listed')
  })

test(
  'catalog: recording_summaries has row-level security enabled and forced, the tenant policy, and only SELECT for the runtime role',
  async () => {
    const { rows: [r] } = await admin.query(`
    SELECT c.relrowsecurity, c.relforcerowsecurity,
           (SELECT pg_get_expr(p.polqual, p.polrelid) FROM pg_policy p
             WHERE p.polrelid = c.oid AND p.polname = 'tenant_isolation') AS policy,
           array(SELECT p FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p
                 WHERE has_table_privilege('govula_runtime', c.oid, p)) AS runtime,
           has_function_privilege('govula_runtime', 'recording_summaries_add()', 'EXECUTE') AS add_fn,
           has_function_privilege('govula_runtime', 'recording_summaries_remove()', 'EXECUTE') AS remove_fn
      FROM pg_class c WHERE c.oid = 'recording_summaries'::regclass`)
    assert.deepEqual([r.relrowsecurity, r.relforcerowsecurity, r.runtime, r.add_fn, r.remove_fn], [true, true, ['SELECT'], false, false])
    assert.match(r.policy, /tenant_id = \( ?SELECT app_tenant_id\(\)/)
    // Another tenant's summaries are invisible through the API.
    const a = await recordingTenant(app, operator, UNTHROTTLED)
    const b = await recordingTenant(app, operator, UNTHROTTLED)
    await ingest(a, [event('secret')])
    assert.deepEqual((await walk(b)).all, [])
  })
