import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { test } from 'node:test'
import {
  createEventBudget, decodeCursor, encodeCursor, InvalidCursorError, prepareBatch, type BatchLimits, type RecordingEventInput
} from '../../services/recordings.js'

const T0 = 1_700_000_000_000

function clockedBudget (windowMs?: number) {
  const clock = { now: T0 }
  const budget = createEventBudget({ now: () => clock.now, ...(windowMs === undefined ? {} : { windowMs }) })
  return { clock, budget }
}

function taken (outcome: ReturnType<ReturnType<typeof createEventBudget>['take']>) {
  assert.ok(outcome.ok, 'admitted')
  return outcome
}

test('budget: events are taken all or none within a minute; a refusal says what is left and when it resets', () => {
  const { clock, budget } = clockedBudget()
  assert.equal(budget.windowS, 60)
  assert.deepEqual(Object.entries(taken(budget.take('t1', 6, 10))).filter(([k]) => k !== 'giveBack'),
    [['ok', true], ['limit', 10], ['remaining', 4], ['resetS', 60]])
  clock.now += 15_000
  assert.deepEqual(budget.take('t1', 5, 10), { ok: false, tooLarge: false, limit: 10, remaining: 4, resetS: 45 }, 'none of the 5 is taken')
  assert.equal(taken(budget.take('t1', 4, 10)).remaining, 0, 'the 4 left are still there')
  assert.deepEqual(budget.take('t1', 1, 10), { ok: false, tooLarge: false, limit: 10, remaining: 0, resetS: 45 })
})

test('budget: a batch larger than the limit is tooLarge, even in a fresh window', () => {
  const { budget } = clockedBudget()
  assert.deepEqual(budget.take('t1', 11, 10), { ok: false, tooLarge: true, limit: 10, remaining: 10, resetS: 60 })
  assert.equal(taken(budget.take('t1', 10, 10)).remaining, 0, 'the refused batch took nothing')
  assert.deepEqual(budget.take('t1', 11, 10), { ok: false, tooLarge: true, limit: 10, remaining: 0, resetS: 60 })
})

test('budget: the window is a fixed minute from the tenant\'s first event in it, then starts afresh', () => {
  const { clock, budget } = clockedBudget()
  taken(budget.take('t1', 10, 10))
  clock.now = T0 + 30_000
  assert.equal(taken(budget.take('t2', 1, 10)).resetS, 60, 'each tenant has its own window')
  clock.now = T0 + 59_001
  assert.equal(budget.take('t1', 1, 10).resetS, 1, 'rounded up, never 0')
  clock.now = T0 + 59_999
  assert.equal(budget.take('t1', 1, 10).ok, false, 'the last millisecond still belongs to the window')
  clock.now = T0 + 60_000
  const fresh = taken(budget.take('t1', 10, 10))
  assert.deepEqual([fresh.remaining, fresh.resetS], [0, 60])
  assert.deepEqual(budget.take('t2', 10, 10), { ok: false, tooLarge: false, limit: 10, remaining: 9, resetS: 30 }, 't2 keeps its own')
  clock.now = T0 + 90_000
  assert.equal(taken(budget.take('t2', 10, 10)).remaining, 0)
})

test('budget: giveBack returns unstored events to the same window only, never below zero', () => {
  const { clock, budget } = clockedBudget()
  const first = taken(budget.take('t1', 6, 10))
  first.giveBack(2)
  assert.equal(taken(budget.take('t1', 6, 10)).remaining, 0, '6 - 2 + 6 = 10')
  first.giveBack(100)
  assert.equal(taken(budget.take('t1', 10, 10)).remaining, 0, 'given back to zero, not below')

  const old = taken(budget.take('t3', 4, 10))
  clock.now += 60_000
  taken(budget.take('t3', 8, 10))
  old.giveBack(4)
  assert.deepEqual(budget.take('t3', 3, 10), { ok: false, tooLarge: false, limit: 10, remaining: 2, resetS: 60 },
    'what was owed to an ended window does not top up the new one')
})

test('budget: the limit is the caller\'s at each take (a lowered limit applies at once); windows of any length', () => {
  const { clock, budget } = clockedBudget(5000)
  assert.equal(budget.windowS, 5)
  taken(budget.take('t1', 8, 10))
  assert.deepEqual(budget.take('t1', 1, 5), { ok: false, tooLarge: false, limit: 5, remaining: 0, resetS: 5 })
  assert.equal(taken(budget.take('t1', 2, 20)).remaining, 10)
  clock.now += 5000
  assert.equal(taken(budget.take('t1', 5, 5)).remaining, 0)
})

const NOW = Date.parse('2025-01-01T00:00:00.000Z')
const event = (over: Partial<RecordingEventInput> = {}): RecordingEventInput =>
  ({ id: randomUUID(), recordingId: 'rec-1', type: 'click', occurredAt: '2024-12-31T23:59:00Z', payload: {}, ...over })
const problems = (events: RecordingEventInput[], limits: BatchLimits = { maxPayloadBytes: 1000 }) => {
  const prepared = prepareBatch(events, limits, NOW)
  assert.equal(prepared.ok, false, 'refused')
  return prepared.ok ? [] : prepared.problems.map(p => `${p.index}.${p.field}: ${p.message}`)
}

test('prepareBatch renders the batch as one JSON document, times normalised to UTC milliseconds', () => {
  const a = event({ type: 'key "down"', occurredAt: '2025-01-01T01:00:00.123456+01:00', payload: { k: 'é', n: [1, null] } })
  const b = event({ id: randomUUID().toUpperCase(), recordingId: 'rec-2' })
  const prepared = prepareBatch([a, b], { maxPayloadBytes: 1000 }, NOW)
  assert.ok(prepared.ok)
  assert.equal(prepared.count, 2)
  assert.deepEqual(JSON.parse(prepared.document), [
    { id: a.id, recording_id: 'rec-1', type: 'key "down"', occurred_at: '2025-01-01T00:00:00.123Z', payload: { k: 'é', n: [1, null] } },
    { id: b.id, recording_id: 'rec-2', type: 'click', occurred_at: '2024-12-31T23:59:00.000Z', payload: {} }
  ])
  assert.deepEqual(prepareBatch([], { maxPayloadBytes: 1 }, NOW), { ok: true, count: 0, document: '[]' })
})

test('prepareBatch refuses what Postgres cannot store: non-UUID ids, NUL and lone surrogates; escaped text is fine', () => {
  assert.deepEqual(problems([event({ id: `urn:uuid:${randomUUID()}` }), event({ id: 'nope' })]), [
    '0.id: must be a UUID of the form 8-4-4-4-12 hex digits',
    '1.id: must be a UUID of the form 8-4-4-4-12 hex digits'
  ])
  const unstorable = 'holds \\u0000 or a lone surrogate, which Postgres cannot store'
  assert.deepEqual(problems([
    event({ type: 'a\u0000b' }),
    event({ payload: { s: 'x\ud800' } }),
    event({ payload: { s: '\udc00' } }),
    event({ payload: { s: '\\\u0000' } }),
    event({ payload: { ok: '\ud83d\ude00' } })
  ]), [`0.type: ${unstorable}`, `1.payload: ${unstorable}`, `2.payload: ${unstorable}`, `3.payload: ${unstorable}`])
  const text = prepareBatch([event({ payload: { s: '\\u0000', t: '\\\\ud800', u: '😀' } })], { maxPayloadBytes: 1000 }, NOW)
  assert.ok(text.ok, 'a backslash followed by "u0000" is text, not an escape')
})

test('prepareBatch counts a payload\'s size in UTF-8 bytes of its JSON', () => {
  const limits = { maxPayloadBytes: 12 }
  assert.equal(prepareBatch([event({ payload: { s: 'éé' } })], limits, NOW).ok, true, '{"s":"éé"} is 10 characters, 12 bytes')
  assert.deepEqual(problems([event({ payload: { s: 'ééé' } }), event({ payload: { s: 'abcdef' } })], limits), [
    '0.payload: is 14 bytes as JSON; the limit is 12',
    '1.payload: is 14 bytes as JSON; the limit is 12'
  ])
})

test('prepareBatch takes times from 1970 to a day ahead of the server clock (or maxFutureMs)', () => {
  const ahead = (ms: number) => new Date(NOW + ms).toISOString()
  const limits = { maxPayloadBytes: 1000 }
  const edges = [event({ occurredAt: ahead(86_400_000) }), event({ occurredAt: '1970-01-01T00:00:00Z' })]
  assert.equal(prepareBatch(edges, limits, NOW).ok, true)
  const message = 'must be a time between 1970 and one day ahead of the server clock'
  assert.deepEqual(problems([
    event({ occurredAt: ahead(86_400_001) }),
    event({ occurredAt: '1969-12-31T23:59:59.999Z' }),
    event({ occurredAt: 'yesterday' }),
    event({ occurredAt: '' })
  ]), [0, 1, 2, 3].map(i => `${i}.occurredAt: ${message}`))
  assert.deepEqual(problems([event({ occurredAt: ahead(1001) })], { maxPayloadBytes: 1000, maxFutureMs: 1000 }),
    [`0.occurredAt: ${message}`])
})

test('prepareBatch reports every problem of an event, and stops after 20', () => {
  assert.deepEqual(problems([event({ id: 'x', type: '\u0000', payload: { s: '\u0000' }, occurredAt: 'never' })]).map(p => p.split(':')[0]),
    ['0.id', '0.type', '0.payload', '0.occurredAt'])
  const many = problems(Array.from({ length: 50 }, () => event({ id: 'x' })))
  assert.equal(many.length, 20)
  assert.equal(many.at(-1)?.split(':')[0], '19.id')
})

test('cursors: what encodeCursor writes decodes back; anything else is an InvalidCursorError', () => {
  const id = randomUUID()
  assert.deepEqual(decodeCursor(encodeCursor({ at: NOW, key: id })), { at: NOW, key: id })
  assert.deepEqual(decodeCursor(encodeCursor({ at: 0, key: 'rec-1:a.b_c' })), { at: 0, key: 'rec-1:a.b_c' })
  assert.match(encodeCursor({ at: NOW, key: id }), /^[A-Za-z0-9_-]+$/, 'URL-safe')
  const forged = ['', 'bm9wZQ', '!!!', `${NOW}~${id}`].concat(
    [`-1~${id}`, `${'9'.repeat(16)}~${id}`, `${NOW}~`, `${NOW}~a b`, `${NOW}~${'k'.repeat(129)}`, `${NOW}~a'; drop table x`, `${NOW}~a\n`]
      .map(raw => Buffer.from(raw).toString('base64url')))
  for (const cursor of forged) assert.throws(() => decodeCursor(cursor), InvalidCursorError, cursor)
})
