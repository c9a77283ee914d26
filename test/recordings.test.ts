import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { test } from 'node:test'
import { createEventBudget, decodeCursor, encodeCursor, prepareBatch } from '../services/recordings.js'
import type { SessionEnvelope } from '../services/accounts.js'
import { adminClient, buildTestApp, createTestDatabase, testConfig } from './support/app.js'
import { bearer, loginOperator, recordingTenant, signup } from './support/actors.js'

const db = await createTestDatabase()
const app = await buildTestApp(testConfig(db))
const operator = await loginOperator(app)

const admin = await adminClient(db)

type App = typeof app

interface Ev { id: string, recordingId: string, type: string, occurredAt: string, payload: Record<string, unknown> }
const event = (recordingId = 'rec-1', over: Partial<Ev> = {}): Ev =>
  ({ id: randomUUID(), recordingId, type: 'click', occurredAt: new Date().toISOString(), payload: { x: 1 }, ...over })
const events = (n: number, recordingId = 'rec-1') => Array.from({ length: n }, () => event(recordingId))

const ingest = (actor: SessionEnvelope, batch: unknown[], a: App = app) =>
  a.inject({ method: 'POST', url: '/api/v1/recordings/events', headers: bearer(actor), payload: { events: batch } })

/** Rows as stored, read as a superuser (past row-level security). */
async function stored (tenant: SessionEnvelope) {
  const { rows } = await admin.query<{ id: string }>('SELECT id FROM recording_events WHERE tenant_id = $1', [tenant.tenant!.id])
  return new Set(rows.map(r => r.id))
}

test('ingest is idempotent: a retried batch stores nothing twice; a mixed batch stores only what is new', async () => {
  const t = await recordingTenant(app, operator)
  const batch = events(5)
  const first = await ingest(t, batch)
  assert.equal(first.statusCode, 202, first.body)
  assert.deepEqual(first.json(), { accepted: 5, duplicates: 0 })

  const retry = await ingest(t, batch)
  assert.equal(retry.statusCode, 202)
  assert.deepEqual(retry.json(), { accepted: 0, duplicates: 5 }, 'a retry after a lost response')

  const mixed = [...batch.slice(0, 3), ...events(2)]
  assert.deepEqual((await ingest(t, mixed)).json(), { accepted: 2, duplicates: 3 })

  const twice = event()
  assert.deepEqual((await ingest(t, [twice, { ...twice }])).json(), { accepted: 1, duplicates: 1 }, 'the same id twice in one batch')

  const ids = await stored(t)
  assert.equal(ids.size, 8)
  for (const e of [...mixed, twice]) assert.ok(ids.has(e.id))
})

test('a batch violating the schema is refused whole: 400 naming the index and the field', async () => {
  const t = await recordingTenant(app, operator)
  const expectRefused = async (batch: unknown[], field: string) => {
    const res = await ingest(t, batch)
    assert.equal(res.statusCode, 400, res.body)
    assert.match(String(res.headers['content-type']), /application\/problem\+json/)
    const body = res.json()
    assert.equal(body.code, 'VALIDATION_FAILED')
    assert.equal(body.errors[0].field, field, body.detail)
    assert.ok(body.detail.startsWith(field), body.detail)
  }
  const good = () => events(5)

  let batch: unknown[] = good()
  ;(batch[3] as Ev).id = 'not-a-uuid'
  await expectRefused(batch, 'body.events.3.id')

  batch = good()
  delete (batch[1] as Partial<Ev>).type
  await expectRefused(batch, 'body.events.1.type')

  batch = good()
  ;(batch[0] as Record<string, unknown>).colour = 'red'
  await expectRefused(batch, 'body.events.0.colour')

  batch = good()
  ;(batch[2] as Ev).occurredAt = 'yesterday'
  await expectRefused(batch, 'body.events.2.occurredAt')

  batch = good()
  ;(batch[4] as Ev).occurredAt = new Date(Date.now() + 3 * 86_400_000).toISOString()
  await expectRefused(batch, 'body.events.4.occurredAt')

  batch = good()
  ;(batch[2] as Record<string, unknown>).payload = [1, 2]
  await expectRefused(batch, 'body.events.2.payload')

  batch = good()
  ;(batch[1] as Ev).recordingId = 'has spaces/and slashes'
  await expectRefused(batch, 'body.events.1.recordingId')

  await expectRefused([], 'body.events')
  assert.equal((await stored(t)).size, 0, 'nothing of any refused batch was stored')
})

test('limits: > 500 events is a 400, a body > 512 KiB a 413, a payload > 16 KiB (as UTF-8 JSON) a 400; all configurable', async () => {
  const t = await recordingTenant(app, operator)
  const tooMany = await ingest(t, events(501))
  assert.equal(tooMany.statusCode, 400)
  assert.equal(tooMany.json().errors[0].field, 'body.events')
  assert.equal((await ingest(t, events(500))).statusCode, 202, 'exactly the maximum')

  // Over the route's 512 KiB though under the global BODY_LIMIT (1 MiB).
  const big = Array.from({ length: 40 }, () => event('rec-1', { payload: { blob: 'x'.repeat(15_000) } }))
  const tooLarge = await ingest(t, big)
  assert.equal(tooLarge.statusCode, 413)
  assert.equal(tooLarge.json().code, 'PAYLOAD_TOO_LARGE')

  // 8 + 2 × 8190 = 16,388 bytes as UTF-8, though only 8,198 characters.
  const batch = events(3)
  batch[2]!.payload = { s: 'é'.repeat(8190) }
  const heavy = await ingest(t, batch)
  assert.equal(heavy.statusCode, 400, heavy.body)
  assert.equal(heavy.json().code, 'VALIDATION_FAILED')
  assert.equal(heavy.json().errors[0].field, 'body.events.2.payload')
  assert.match(heavy.json().detail, /16388 bytes.*16384/)
  batch[2]!.payload = { s: 'é'.repeat(8188) } // 16,384 bytes: the limit itself passes
  assert.equal((await ingest(t, batch)).statusCode, 202)
  assert.equal((await stored(t)).size, 503)

  const small = await buildTestApp(testConfig(db, {
    RECORDING_MAX_BATCH_EVENTS: 3,
    RECORDING_MAX_BATCH_BYTES: 2048,
    RECORDING_MAX_PAYLOAD_BYTES: 100
  }))
  const op = await loginOperator(small)
  const s = await recordingTenant(small, op)
  assert.equal((await ingest(s, events(4), small)).json().errors[0].field, 'body.events')
  assert.equal((await ingest(s, [event('r', { payload: { s: 'x'.repeat(100) } })], small)).json().errors[0].field, 'body.events.0.payload')
  assert.equal((await ingest(s, Array.from({ length: 3 }, () => event('r', { payload: { s: 'x'.repeat(90) } })), small)).statusCode, 202)
  const over = await small.inject({
    method: 'POST',
    url: '/api/v1/recordings/events',
    headers: { ...bearer(s), 'content-type': 'application/json' },
    payload: JSON.stringify({ events: events(3) }) + ' '.repeat(2048)
  })
  assert.equal(over.statusCode, 413)
})

test('entitlement off: 403 ENTITLEMENT_DENIED, whatever the body; nothing stored', async () => {
  const free = await signup(app)
  const res = await ingest(free, events(2))
  assert.equal(res.statusCode, 403)
  assert.match(String(res.headers['content-type']), /application\/problem\+json/)
  assert.equal(res.json().code, 'ENTITLEMENT_DENIED')
  assert.match(res.json().detail, /recording_mode/)
  assert.equal((await ingest(free, [{ nonsense: true }])).statusCode, 403, 'the gate comes before validation')

  // Recording granted but no events per minute (the free plan's 0): no ingest at all.
  const zero = await recordingTenant(app, operator, { recording_events_per_minute: 0 })
  const denied = await ingest(zero, events(1))
  assert.equal(denied.statusCode, 403)
  assert.match(denied.json().detail, /recording_events_per_minute/)
  assert.equal((await stored(free)).size + (await stored(zero)).size, 0)

  assert.equal((await app.inject({ method: 'POST', url: '/api/v1/recordings/events', payload: { events: events(1) } })).statusCode, 401)
})

test(
  'events per minute, counted in events per tenant: 429 problem+json with Retry-After, batch not stored; the request limit does not apply',
  async () => {
    const t = await recordingTenant(app, operator, { recording_events_per_minute: 10, api_requests_per_minute: 2 })
    const other = await recordingTenant(app, operator, { recording_events_per_minute: 10 })

    const first = await ingest(t, events(6))
    assert.equal(first.statusCode, 202)
    assert.match(String(first.headers.ratelimit), /"recording-events";r=4;t=\d+/)
    const refused = events(5)
    const limited = await ingest(t, refused)
    assert.equal(limited.statusCode, 429, limited.body)
    assert.match(String(limited.headers['content-type']), /application\/problem\+json/)
    assert.equal(limited.json().code, 'RATE_LIMITED')
    const retryAfter = Number(limited.headers['retry-after'])
    assert.ok(retryAfter >= 1 && retryAfter <= 60, `retry-after ${limited.headers['retry-after']}`)
    assert.match(limited.json().detail, /10 recording events per minute/)
    const ids = await stored(t)
    assert.ok(refused.every(e => !ids.has(e.id)), 'the refused batch stored nothing')

    // Exactly the limit, in three requests: the tenant's 2 requests per minute do not count here.
    assert.equal((await ingest(t, events(4))).statusCode, 202)
    assert.equal((await ingest(t, events(1))).statusCode, 429)
    assert.equal((await stored(t)).size, 10)

    // Another tenant's budget is its own; a batch that can never fit is a 413 (send smaller ones).
    assert.equal((await ingest(other, events(10))).statusCode, 202)
    const never = await ingest(other, events(11))
    assert.equal(never.statusCode, 413)
    assert.match(never.json().detail, /send smaller batches/)
  })

test('the budget counts stored events: duplicates are given back; a window per tenant (unit, fake clock)', () => {
  let now = 1_000_000
  const budget = createEventBudget({ now: () => now })
  const first = budget.take('a', 6, 10)
  assert.ok(first.ok)
  assert.deepEqual([first.remaining, first.resetS], [4, 60])
  first.giveBack(6) // a retried batch: all duplicates
  assert.equal(budget.take('a', 10, 10).ok, true)
  now += 15_000
  const spent = budget.take('a', 1, 10)
  assert.deepEqual(spent.ok ? null : [spent.tooLarge, spent.remaining, spent.resetS], [false, 0, 45])
  assert.equal(budget.take('b', 10, 10).ok, true, 'per tenant')
  const tooLarge = budget.take('c', 11, 10)
  assert.equal(!tooLarge.ok && tooLarge.tooLarge, true)
  const old = budget.take('d', 4, 10)
  now += 45_000 // a's window is over
  const fresh = budget.take('a', 10, 10)
  assert.deepEqual(fresh.ok && [fresh.remaining, fresh.resetS], [0, 60])

  now += 60_000 // d's window too
  assert.equal(budget.take('d', 8, 10).ok, true)
  assert.ok(old.ok)
  old.giveBack(4) // owed to an ended window: void, the new window keeps its count
  assert.equal(budget.take('d', 3, 10).ok, false)
})

test('prepareBatch and the cursor (unit)', () => {
  const now = Date.parse('2025-01-01T00:00:00Z')
  const ok = prepareBatch([
    { id: randomUUID(), recordingId: 'r', type: 't', occurredAt: '2024-12-31T23:00:00.123456+01:00', payload: { a: '"quoted"' } }
  ], { maxPayloadBytes: 100 }, now)
  assert.ok(ok.ok)
  const [row] = JSON.parse(ok.document)
  assert.equal(row.occurred_at, '2024-12-31T22:00:00.123Z', 'normalised to UTC milliseconds')
  assert.deepEqual(row.payload, { a: '"quoted"' })
  const bad = prepareBatch([
    { id: randomUUID(), recordingId: 'r', type: 't', occurredAt: '2024-12-31T23:00:00Z', payload: { s: 'x'.repeat(200) } },
    { id: randomUUID(), recordingId: 'r', type: 't', occurredAt: '2025-01-03T00:00:00Z', payload: {} }
  ], { maxPayloadBytes: 100 }, now)
  assert.deepEqual(bad.ok ? [] : bad.problems.map(p => `${p.index}.${p.field}`), ['0.payload', '1.occurredAt'])

  const id = randomUUID()
  assert.deepEqual(decodeCursor(encodeCursor({ at: now, key: id })), { at: now, key: id })
  assert.throws(() => decodeCursor('bm9wZQ'))
  assert.throws(() => decodeCursor(Buffer.from('1~a\'; drop table').toString('base64url')))
})

test('reading: recordings with counts and time range; events in (occurredAt, id) order with a keyset cursor', async () => {
  const t = await recordingTenant(app, operator)
  const base = Date.parse('2025-03-01T10:00:00.000Z')
  const at = (ms: number) => new Date(base + ms).toISOString()
  // Ties on occurredAt are ordered by id.
  const a = [0, 0, 0, 5, 5, 9, 12].map(ms => event('alpha', { occurredAt: at(ms) }))
  const b = [100, 200].map(ms => event('beta', { occurredAt: at(ms) }))
  assert.equal((await ingest(t, [...a.slice().reverse(), ...b])).statusCode, 202)

  const list = await app.inject({ url: '/api/v1/recordings', headers: bearer(t) })
  assert.equal(list.statusCode, 200)
  assert.deepEqual(list.json(), {
    recordings: [
      { recordingId: 'beta', events: 2, firstAt: at(100), lastAt: at(200) },
      { recordingId: 'alpha', events: 7, firstAt: at(0), lastAt: at(12) }
    ],
    nextCursor: null
  })
  const page1 = (await app.inject({ url: '/api/v1/recordings?limit=1', headers: bearer(t) })).json()
  assert.deepEqual(page1.recordings.map((r: { recordingId: string }) => r.recordingId), ['beta'])
  const page2 = (await app.inject({ url: `/api/v1/recordings?limit=1&cursor=${page1.nextCursor}`, headers: bearer(t) })).json()
  assert.deepEqual([page2.recordings.map((r: { recordingId: string }) => r.recordingId), page2.nextCursor], [['alpha'], null])

  const expected = a.slice().sort((x, y) => x.occurredAt.localeCompare(y.occurredAt) || x.id.localeCompare(y.id))
  const seen: Ev[] = []
  let cursor: string | null = null
  let pages = 0
  do {
    const res: Awaited<ReturnType<App['inject']>> = await app.inject({
      url: `/api/v1/recordings/alpha/events?limit=2${cursor ? `&cursor=${cursor}` : ''}`,
      headers: bearer(t)
    })
    assert.equal(res.statusCode, 200, res.body)
    const body = res.json() as { events: Ev[], nextCursor: string | null }
    assert.ok(body.events.length <= 2)
    seen.push(...body.events)
    cursor = body.nextCursor
    pages++
  } while (cursor)
  assert.equal(pages, 4)
  assert.deepEqual(seen, expected)

  const all = (await app.inject({ url: '/api/v1/recordings/alpha/events', headers: bearer(t) })).json()
  assert.equal(all.events.length, 7, 'default limit 100')
  assert.equal(all.nextCursor, null)
  assert.equal((await app.inject({ url: '/api/v1/recordings/alpha/events?limit=501', headers: bearer(t) })).statusCode, 400)
  const badCursor = await app.inject({ url: '/api/v1/recordings/alpha/events?cursor=garbage', headers: bearer(t) })
  assert.equal(badCursor.statusCode, 400)
  assert.equal(badCursor.json().errors[0].field, 'querystring.cursor')
  const foreign = encodeCursor({ at: base, key: 'beta' }) // a list cursor is not an events cursor
  assert.equal((await app.inject({ url: `/api/v1/recordings/alpha/events?cursor=${foreign}`, headers: bearer(t) })).statusCode, 400)
  const none = await app.inject({ url: '/api/v1/recordings/gamma/events', headers: bearer(t) })
  assert.equal(none.statusCode, 404)
  assert.equal(none.json().code, 'NOT_FOUND')
})

test('tenant isolation: another tenant cannot list or read a recording (404, never 403); ids are per tenant', async () => {
  const a = await recordingTenant(app, operator)
  const b = await recordingTenant(app, operator)
  const mine = events(3, 'shared-name')
  assert.equal((await ingest(a, mine)).statusCode, 202)

  assert.deepEqual((await app.inject({ url: '/api/v1/recordings', headers: bearer(b) })).json(), { recordings: [], nextCursor: null })
  const read = await app.inject({ url: '/api/v1/recordings/shared-name/events', headers: bearer(b) })
  assert.equal(read.statusCode, 404)
  assert.equal(read.json().code, 'NOT_FOUND')
  const withCursor = await app.inject({
    url: `/api/v1/recordings/shared-name/events?cursor=${encodeCursor({ at: 0, key: mine[0]!.id })}`,
    headers: bearer(b)
  })
  assert.equal(withCursor.statusCode, 404)

  // B sending A's event ids stores B's own events; A's are untouched.
  assert.deepEqual((await ingest(b, [{ ...mine[0]!, payload: { by: 'b' } }])).json(), { accepted: 1, duplicates: 0 })
  const bRead = (await app.inject({ url: '/api/v1/recordings/shared-name/events', headers: bearer(b) })).json()
  assert.deepEqual(bRead.events.map((e: Ev) => e.payload), [{ by: 'b' }])
  const aRead = (await app.inject({ url: '/api/v1/recordings/shared-name/events', headers: bearer(a) })).json()
  assert.equal(aRead.events.length, 3)
  assert.ok(aRead.events.every((e: Ev) => e.payload.x === 1))
})

test('reads stay open without recording_mode (a downgraded tenant reads what it recorded)', async () => {
  const t = await recordingTenant(app, operator)
  assert.equal((await ingest(t, events(2, 'kept'))).statusCode, 202)
  const ended = await app.inject({ method: 'DELETE', url: `/api/v1/operator/tenants/${t.tenant!.id}/contract`, headers: bearer(operator) })
  assert.equal(ended.statusCode, 204)
  assert.equal((await ingest(t, events(1, 'kept'))).statusCode, 403)
  assert.equal((await app.inject({ url: '/api/v1/recordings/kept/events', headers: bearer(t) })).json().events.length, 2)
})

test('GET /recorder.js: public, JavaScript, cacheable with an ETag (304 on a match); documented routes', async () => {
  const res = await app.inject('/recorder.js')
  assert.equal(res.statusCode, 200)
  assert.equal(res.headers['content-type'], 'text/javascript; charset=utf-8')
  assert.equal(res.headers['cache-control'], 'public, max-age=300')
  assert.equal(res.headers['x-content-type-options'], 'nosniff')
  assert.match(res.body, /GovulaRecorder/)
  assert.ok(res.rawPayload.length < 16_384, `the recorder is small (${res.rawPayload.length} bytes)`)
  const etag = String(res.headers.etag)
  assert.match(etag, /^"[\w-]{22}"$/)
  const again = await app.inject({ url: '/recorder.js', headers: { 'if-none-match': `W/"other", ${etag}` } })
  assert.equal(again.statusCode, 304)
  assert.equal(again.body, '')
  assert.equal((await app.inject({ url: '/recorder.js', headers: { 'if-none-match': '"stale"' } })).statusCode, 200)

  const doc = (await app.inject('/docs/json')).json()
  const documented = [
    ['/api/v1/recordings/events', 'post'], ['/api/v1/recordings', 'get'], ['/api/v1/recordings/{recordingId}/events', 'get']
  ] as const
  for (const [path, method] of documented) {
    assert.ok(doc.paths[path]?.[method], `${method} ${path} is documented`)
  }
  assert.ok(doc.paths['/recorder.js']?.get?.responses?.['200']?.content?.['text/javascript'], 'documented as a script')
})
