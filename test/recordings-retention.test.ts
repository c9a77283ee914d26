import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { test } from 'node:test'
import { purgeExpiredRecordings, type PurgeDeps } from '../services/recordings.js'
import type { SessionEnvelope } from '../services/accounts.js'
import { adminClient, buildTestApp, createTestDatabase, testConfig } from './support/app.js'
import { bearer, loginOperator, recordingTenant } from './support/actors.js'

// A database of its own: the purge walks every tenant in it.
const db = await createTestDatabase()
const app = await buildTestApp(testConfig(db))
const operator = await loginOperator(app)
const admin = await adminClient(db)

const DAY = 86_400_000

const tenantWithRetention = (days: number) => recordingTenant(app, operator, { recording_retention_days: days })

/** Records one event per age (in days) through the API; returns their ids, oldest first. */
async function recordAged (t: SessionEnvelope, agesInDays: number[]) {
  const events = agesInDays.map(age => ({
    id: randomUUID(),
    recordingId: 'aged',
    type: 'tick',
    occurredAt: new Date(Date.now() - age * DAY).toISOString(),
    payload: { age }
  }))
  const res = await app.inject({ method: 'POST', url: '/api/v1/recordings/events', headers: bearer(t), payload: { events } })
  assert.equal(res.statusCode, 202, res.body)
  return events.sort((a, b) => a.occurredAt.localeCompare(b.occurredAt)).map(e => e.id)
}

async function ages (t: SessionEnvelope) {
  const { rows } = await admin.query<{ age: number }>(
    "SELECT (payload->>'age')::float8 AS age FROM recording_events WHERE tenant_id = $1 ORDER BY occurred_at", [t.tenant!.id])
  return rows.map(r => r.age)
}

const a = await tenantWithRetention(7)
const b = await tenantWithRetention(365)
const c = await tenantWithRetention(30)
// B's retention is unlimited (null). Through the engine, as the contract route cannot set a
// null limit today (it reads null as 0).
const entitlements: PurgeDeps['entitlements'] = {
  check: async (tenantId, feature) => tenantId === b.tenant!.id
    ? { allowed: true, limit: null, source: 'contract', reason: 'unlimited' }
    : app.entitlements.check(tenantId, feature)
}
const deps = (over: Partial<PurgeDeps> = {}): PurgeDeps => ({ db: app.db, log: app.log, entitlements, ...over })
const live = () => new AbortController().signal

await recordAged(a, [10, 9, 8, 8, 8, 6, 0.01])
await recordAged(b, [400, 1])
await recordAged(c, [31, 29])

test("the purge deletes each tenant's events past its recording_retention_days, in bounded batches, as the runtime role", async () => {
  const result = await purgeExpiredRecordings(deps(), live(), { batchSize: 2 })
  // A: 5 expired → batches of 2, 2, 1; B keeps everything (no limit); C: 1 expired → 1 batch.
  assert.deepEqual(result, { deleted: 6, tenants: 3, batches: 4, aborted: false })
  assert.deepEqual(await ages(a), [6, 0.01])
  assert.deepEqual(await ages(b), [400, 1])
  assert.deepEqual(await ages(c), [29])

  const again = await purgeExpiredRecordings(deps(), live())
  assert.equal(again.deleted, 0, 'nothing left to purge')
})

test('the cutoff follows the clock it is given', async () => {
  const result = await purgeExpiredRecordings(deps({ now: () => Date.now() + 2 * DAY }), live())
  assert.equal(result.deleted, 2)
  assert.deepEqual(await ages(a), [0.01])
  assert.deepEqual(await ages(c), [])
})

test('an abort stops the purge before its next batch, the oldest gone first; an aborted signal does nothing', async () => {
  const d = await tenantWithRetention(1)
  await recordAged(d, [6, 5, 4, 3, 2])

  const before = await purgeExpiredRecordings(deps(), AbortSignal.abort())
  assert.deepEqual(before, { deleted: 0, tenants: 0, batches: 0, aborted: true })

  const controller = new AbortController()
  const db = { ...app.db }
  // Abort right after D's first batch commits.
  db.withTenant = async (tenantId, fn) => {
    const result = await app.db.withTenant(tenantId, fn)
    if (tenantId === d.tenant!.id) controller.abort(new Error('shutting down'))
    return result
  }
  const partial = await purgeExpiredRecordings(deps({ db }), controller.signal, { batchSize: 2 })
  assert.equal(partial.deleted, 2)
  assert.equal(partial.aborted, true)
  assert.deepEqual(await ages(d), [4, 3, 2])

  const rest = await purgeExpiredRecordings(deps(), live(), { batchSize: 2 })
  assert.equal(rest.deleted, 3)
  assert.deepEqual(await ages(d), [])
  assert.deepEqual(await ages(b), [400, 1], 'still untouched')
})
