import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { test } from 'node:test'
import type { FastifyRequest } from 'fastify'
import type { App } from '../app.js'
import type { Config } from '../config.js'
import { createTenantSlots, TenantBusyError, tenantMaxConnections } from '../infra/tenant-slots.js'
import type { SessionEnvelope } from '../services/accounts.js'
import { adminClient, buildTestApp, createTestDatabase, testConfig, waitFor } from './support/app.js'
import { bearer, loginOperator, setContract, signup } from './support/actors.js'

// A tenant's share of the pool (services/tenant-slots.ts). Tenant A's reads are made slow
// deterministically: a test route waits on an advisory lock a superuser holds, on a pool of 4
// connections (a share of 2 each). Tenant B must be served while A's reads are stalled.
const db = await createTestDatabase()
const admin = await adminClient(db)
const LOCK = 7_010_010

function slowRoutes (app: App) {
  const slow = async (request: FastifyRequest) =>
    request.withTenant(async (c) => { await c.query('SELECT pg_advisory_xact_lock_shared($1)', [LOCK]); return { ok: true } })
  const config = { auth: 'tenant' as const, rateLimit: false, tenantRateLimit: false }
  // A GET joins the transaction of the auth lookup (held); a POST checks out through db.withTenant.
  app.get('/test/slow', { config }, async (request) => slow(request))
  app.post('/test/slow', { config }, async (request) => slow(request))
}

async function appWith (over: Partial<Config>) {
  return buildTestApp(testConfig(db, { DB_MAX_CONNECTIONS: 4, DB_CONNECTION_TIMEOUT: 2000, ...over }), { setup: slowRoutes })
}

/** Backends of this database waiting on the advisory lock. */
async function stalled () {
  const { rows: [r] } = await admin.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock' AND wait_event = 'advisory'",
    [db.name])
  return r!.n
}

/** Fires n slow requests of one tenant; `settled` fills in as they answer. */
function fire (app: App, actor: SessionEnvelope, n: number, method: 'GET' | 'POST' = 'GET') {
  const settled: Array<{ statusCode: number, headers: Record<string, unknown>, json(): { code: string } }> = []
  const all = Promise.all(Array.from({ length: n }, () =>
    app.inject({ method, url: '/test/slow', headers: bearer(actor) }).then(r => { settled.push(r); return r })))
  return { settled, all }
}

function assertRefused (res: { statusCode: number, headers: Record<string, unknown>, json(): { code: string } }) {
  assert.equal(res.statusCode, 429)
  assert.match(String(res.headers['content-type']), /application\/problem\+json/)
  assert.equal(res.json().code, 'RATE_LIMITED')
  assert.equal(res.headers['retry-after'], '1')
}

test(
  'over its share a tenant is refused (429 problem+json, Retry-After: 1) on every path to the pool; others are served while it is stalled',
  async () => {
    const app = await appWith({ DB_TENANT_QUEUE_TIMEOUT_MS: 0 })
    assert.equal(app.tenantSlots.max, 2)
    const operator = await loginOperator(app)
    const a = await signup(app)
    const b = await signup(app)
    await setContract(app, operator, a.tenant!.id, { recording_mode: true, recording_events_per_minute: 1_000_000 })

    await admin.query('SELECT pg_advisory_lock($1)', [LOCK])
    const gets = fire(app, a, 6)
    // Two of A's reads hold its two connections; the other four are refused, not queued in the pool.
    await waitFor(async () => gets.settled.length === 4 && await stalled() === 2, { what: '4 refusals and 2 stalled reads' })
    for (const res of gets.settled) assertRefused(res)
    assert.equal(app.tenantSlots.busy(a.tenant!.id), 2)

    // B is served while A's two reads are still waiting.
    const list = await app.inject({ url: '/api/v1/recordings', headers: bearer(b) })
    assert.equal(list.statusCode, 200, list.body)
    assert.deepEqual(list.json(), { recordings: [], nextCursor: null })
    assert.equal((await app.inject({ url: '/api/v1/tenant/members', headers: bearer(b) })).statusCode, 200)
    // A, over its share, on the other paths: a GET's held transaction, db.withTenant, the ingest.
    assertRefused(await app.inject({ url: '/api/v1/recordings', headers: bearer(a) }))
    assertRefused(await app.inject({ method: 'POST', url: '/test/slow', headers: bearer(a) }))
    const batch = [{ id: randomUUID(), recordingId: 'r', type: 'click', occurredAt: new Date().toISOString(), payload: {} }]
    assertRefused(await app.inject({ method: 'POST', url: '/api/v1/recordings/events', headers: bearer(a), payload: { events: batch } }))
    assert.equal(gets.settled.length, 4, 'A\'s two reads are still stalled')
    assert.equal(await stalled(), 2)

    await admin.query('SELECT pg_advisory_unlock($1)', [LOCK])
    const answered = await gets.all
    assert.deepEqual(answered.map(r => r.statusCode).sort(), [200, 200, 429, 429, 429, 429])
    // Every slot came back, whichever way its request ended.
    await waitFor(() => app.tenantSlots.busy(a.tenant!.id) === 0 && app.tenantSlots.busy(b.tenant!.id) === 0, { what: 'slots given back' })
    const ingest = await app.inject({ method: 'POST', url: '/api/v1/recordings/events', headers: bearer(a), payload: { events: batch } })
    assert.equal(ingest.statusCode, 202)
    assert.equal((await app.inject({ url: '/api/v1/recordings', headers: bearer(a) })).json().recordings[0].events, 1)
  })

test(
  'within DB_TENANT_QUEUE_TIMEOUT_MS the extra requests wait in their tenant\'s own queue, holding no connection; past it, 429',
  async () => {
    const app = await appWith({ DB_TENANT_QUEUE_TIMEOUT_MS: 60_000 })
    const a = await signup(app)
    const b = await signup(app)
    await admin.query('SELECT pg_advisory_lock($1)', [LOCK])
    const gets = fire(app, a, 3)
    const posts = fire(app, a, 2, 'POST')
    // (Concurrent entitlement misses of a tenant share one read: fewer waiters than requests.)
    await waitFor(async () => await stalled() === 2 && app.tenantSlots.queued(a.tenant!.id) >= 2, { what: '2 stalled, the rest queued' })
    // Two connections are A's; B takes one of the two left, and is answered.
    assert.equal((await app.inject({ url: '/api/v1/recordings', headers: bearer(b) })).statusCode, 200)
    assert.equal(gets.settled.length + posts.settled.length, 0, 'A\'s requests are waiting, none refused')
    await admin.query('SELECT pg_advisory_unlock($1)', [LOCK])
    assert.deepEqual([...await gets.all, ...await posts.all].map(r => r.statusCode), [200, 200, 200, 200, 200], 'served in turn')

    const short = await appWith({ DB_TENANT_QUEUE_TIMEOUT_MS: 200 })
    await admin.query('SELECT pg_advisory_lock($1)', [LOCK])
    const some = fire(short, a, 3, 'POST')
    await waitFor(() => some.settled.length === 1, { what: 'the queued request to time out' })
    assertRefused(some.settled[0]!)
    assert.equal(await stalled(), 2)
    await admin.query('SELECT pg_advisory_unlock($1)', [LOCK])
    assert.deepEqual((await some.all).map(r => r.statusCode).sort(), [200, 200, 429])
  })

test(
  'slots (unit): at most max per tenant, handed over first in first out, each release counted once, nothing kept for an idle tenant',
  async () => {
    assert.equal(tenantMaxConnections({ DB_MAX_CONNECTIONS: 20 }), 10)
    assert.equal(tenantMaxConnections({ DB_MAX_CONNECTIONS: 5 }), 3)
    assert.equal(tenantMaxConnections({ DB_MAX_CONNECTIONS: 1 }), 1)
    assert.equal(tenantMaxConnections({ DB_MAX_CONNECTIONS: 20, DB_TENANT_MAX_CONNECTIONS: 4 }), 4)

    const slots = createTenantSlots({ max: 2, queueTimeoutMs: 60_000 })
    const r1 = slots.tryTake('t')!
    const r2 = slots.tryTake('t')!
    assert.equal(slots.tryTake('t'), null)
    assert.ok(slots.tryTake('u'), 'another tenant has its own')
    const order: number[] = []
    const third = slots.take('t').then(r => { order.push(3); return r })
    const fourth = slots.take('t').then(r => { order.push(4); return r })
    assert.equal(slots.queued('t'), 2)
    r1()
    r1() // a second call gives nothing back
    const r3 = await third
    assert.deepEqual([order, slots.busy('t'), slots.tryTake('t')], [[3], 2, null], 'handed over: no newcomer takes it first')
    r2()
    const r4 = await fourth
    r3()
    r4()
    assert.deepEqual([slots.busy('t'), slots.queued('t')], [0, 0])

    const none = createTenantSlots({ max: 1, queueTimeoutMs: 0 })
    none.tryTake('t')
    await assert.rejects(none.take('t'), TenantBusyError)
  })

test('a job visiting tenants skips one whose share of the pool is busy, and takes every other tenant', async () => {
  const app = await appWith({ DB_TENANT_MAX_CONNECTIONS: 1, DB_TENANT_QUEUE_TIMEOUT_MS: 0 })
  const a = await signup(app)
  const b = await signup(app)
  await admin.query('SELECT pg_advisory_lock($1)', [LOCK])
  const held = fire(app, a, 1)
  try {
    await waitFor(async () => await stalled() === 1, { what: "a's one connection stalled" })
    // a holds its whole share; the checkpoint job must still sign b's chains and succeed.
    const outcome = await app.jobRunner.run('audit-checkpoint', 'cron')
    assert.equal(outcome.ran, true)
    const { rows } = await admin.query<{ tenant_id: string }>(
      'SELECT DISTINCT tenant_id::text FROM audit_checkpoints WHERE tenant_id IS NOT NULL')
    const signed = rows.map(r => r.tenant_id)
    assert.ok(signed.includes(b.tenant!.id), 'b was checkpointed')
    assert.ok(!signed.includes(a.tenant!.id), 'a, busy, was left for the next run')
  } finally {
    await admin.query('SELECT pg_advisory_unlock($1)', [LOCK])
    await held.all
  }
})
