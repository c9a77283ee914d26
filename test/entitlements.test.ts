import assert from 'node:assert/strict'
import { test } from 'node:test'
import { backoffDelay } from '../infra/entitlement-broadcast.js'
import type { Database } from '../infra/database.js'
import { createEntitlementEngine } from '../services/entitlements.js'
import { adminClient, buildTestApp, captureLogs, createTestDatabase, testConfig, waitFor } from './support/app.js'
import { bearer, loginOperator, signup } from './support/actors.js'
import { proxyFor, viaPort } from './support/fault-proxy.js'

const db = await createTestDatabase()
const app = await buildTestApp(testConfig(db))
const operator = await loginOperator(app)

const check = async (a: typeof app, actor: { accessToken: string }, feature: string) => {
  const res = await a.inject({ url: `/api/v1/entitlements/check?feature=${feature}`, headers: bearer(actor) })
  assert.equal(res.statusCode, 200, res.body)
  return res.json() as { feature: string, allowed: boolean, limit: number | null, source: string, reason: string }
}

const setPlan = (a: typeof app, tenantId: string, plan: string) =>
  a.inject({ method: 'PUT', url: `/api/v1/operator/tenants/${tenantId}/plan`, headers: bearer(operator), payload: { plan } })
const putContract = (tenantId: string, features: Record<string, unknown>, startsAt: string, endsAt: string) =>
  app.inject({
    method: 'PUT', url: `/api/v1/operator/tenants/${tenantId}/contract`, headers: bearer(operator), payload: { features, startsAt, endsAt }
  })
const endContract = (tenantId: string) =>
  app.inject({ method: 'DELETE', url: `/api/v1/operator/tenants/${tenantId}/contract`, headers: bearer(operator) })

test('plans seed the features; GET /entitlements lists them with source and reason', async () => {
  const t = await signup(app)
  const res = await app.inject({ url: '/api/v1/entitlements', headers: bearer(t) })
  assert.equal(res.statusCode, 200)
  const body = res.json()
  assert.equal(body.plan, 'free')
  assert.equal(body.lifecycle, 'trial')
  assert.deepEqual(Object.keys(body.features).sort(),
    ['api_requests_per_minute', 'audit_export', 'recording_events_per_minute', 'recording_mode', 'recording_retention_days', 'seats'])
  assert.deepEqual(body.features.recording_mode, { allowed: false, limit: null, source: 'plan', reason: 'not included in plan free' })
  assert.deepEqual(body.features.seats, { allowed: true, limit: 3, source: 'plan', reason: 'plan free' })

  assert.equal((await setPlan(app, t.tenant!.id, 'pro')).statusCode, 200)
  assert.equal((await check(app, t, 'recording_mode')).allowed, true)
  assert.equal((await check(app, t, 'seats')).limit, 25)
  const bulk = await app.inject({
    method: 'POST', url: '/api/v1/entitlements/check', headers: bearer(t), payload: { features: ['audit_export', 'seats'] }
  })
  assert.deepEqual(bulk.json().results.map((r: { feature: string, allowed: boolean }) => [r.feature, r.allowed]),
    [['audit_export', true], ['seats', true]])
})

test('bad input: unknown feature or plan is a 400, never a 500', async () => {
  const t = await signup(app)
  assert.equal((await app.inject({ url: '/api/v1/entitlements/check?feature=teleport', headers: bearer(t) })).statusCode, 400)
  assert.equal((await setPlan(app, t.tenant!.id, 'platinum')).statusCode, 400)
  const none = await app.inject({ method: 'POST', url: '/api/v1/entitlements/check', headers: bearer(t), payload: { features: [] } })
  assert.equal(none.statusCode, 400)
  const contract = await putContract(t.tenant!.id, { seats: -1 }, new Date().toISOString(), new Date(Date.now() + 1000).toISOString())
  assert.equal(contract.statusCode, 400)
  const backwards = await putContract(t.tenant!.id, { seats: 5 }, new Date().toISOString(), new Date(Date.now() - 1000).toISOString())
  assert.equal(backwards.statusCode, 400)
  assert.equal((await setPlan(app, '00000000-0000-4000-8000-000000000000', 'pro')).statusCode, 404)
})

test('contracts override the plan while they run; lifecycle is a validated state machine', async () => {
  const t = await signup(app)
  const starts = new Date(Date.now() - 60_000).toISOString()
  const ends = new Date(Date.now() + 3_600_000).toISOString()
  const put = await putContract(t.tenant!.id, { recording_mode: true, seats: 500 }, starts, ends)
  assert.equal(put.statusCode, 200, put.body)
  const rm = await check(app, t, 'recording_mode')
  assert.equal(rm.allowed, true)
  assert.equal(rm.source, 'contract')
  assert.equal((await check(app, t, 'seats')).limit, 500)
  // null is "no limit" and 0 is zero: type coercion must turn neither into the other
  const unlimited = await putContract(t.tenant!.id, { recording_mode: true, seats: null }, starts, ends)
  assert.equal(unlimited.statusCode, 200, unlimited.body)
  assert.deepEqual([(await check(app, t, 'seats')).allowed, (await check(app, t, 'seats')).limit], [true, null])
  const zero = await putContract(t.tenant!.id, { recording_mode: true, seats: 0 }, starts, ends)
  assert.equal(zero.statusCode, 200, zero.body)
  assert.equal((await check(app, t, 'seats')).limit, 0)
  assert.equal((await endContract(t.tenant!.id)).statusCode, 204)
  assert.equal((await check(app, t, 'recording_mode')).allowed, false)
  assert.equal((await endContract(t.tenant!.id)).statusCode, 404)

  const move = (to: string) =>
    app.inject({ method: 'POST', url: `/api/v1/operator/tenants/${t.tenant!.id}/lifecycle`, headers: bearer(operator), payload: { to } })
  assert.equal((await move('active')).statusCode, 200)
  assert.equal((await move('trial')).statusCode, 409)
  assert.equal((await move('suspended')).statusCode, 200)
  assert.equal((await check(app, t, 'seats')).allowed, false, 'suspended: read-only')
  assert.equal((await check(app, t, 'api_requests_per_minute')).allowed, true, 'reads go on')
  assert.equal((await move('cancelled')).statusCode, 200)
  const exp = await check(app, t, 'audit_export')
  assert.deepEqual([exp.allowed, exp.source], [true, 'lifecycle'], 'cancelled: export only')
  const illegal = await move('active')
  assert.equal(illegal.statusCode, 409)
  assert.equal(illegal.json().code, 'CONFLICT')
})

test('a member gets 403 on operator routes; tenants never see each other', async () => {
  const t = await signup(app)
  const other = await signup(app)
  const res = await app.inject({ url: '/api/v1/operator/tenants', headers: bearer(t) })
  assert.equal(res.statusCode, 403)
  assert.equal(res.json().code, 'AUTH_FORBIDDEN')
  assert.equal((await setPlan(app, other.tenant!.id, 'free')).statusCode, 200)
  await setPlan(app, t.tenant!.id, 'enterprise')
  // Each tenant's answers are its own, whatever the other has.
  assert.equal((await check(app, t, 'seats')).limit, null)
  assert.equal((await check(app, other, 'seats')).limit, 3)
  const list = await app.inject({ url: '/api/v1/operator/tenants?limit=1', headers: bearer(operator) })
  assert.equal(list.statusCode, 200)
  assert.equal(list.json().tenants.length, 1)
  assert.ok(list.json().nextCursor)
})

test('gate: requireFeature answers 403 ENTITLEMENT_DENIED with the reason', async () => {
  const gated = await buildTestApp(testConfig(db), {
    setup (a) { a.get('/test/export', { preHandler: a.requireFeature('audit_export') }, async () => ({ ok: true })) }
  })
  const t = await signup(gated)
  const denied = await gated.inject({ url: '/test/export', headers: bearer(t) })
  assert.equal(denied.statusCode, 403)
  assert.equal(denied.json().code, 'ENTITLEMENT_DENIED')
  assert.match(denied.json().detail, /audit_export: not included in plan free/)
  await setPlan(gated, t.tenant!.id, 'pro')
  assert.equal((await gated.inject({ url: '/test/export', headers: bearer(t) })).statusCode, 200)
})

test('dates take effect on time with a warm cache: contract end, trial end (fake clock)', async () => {
  const t = await signup(app)
  let clock = Date.now()
  const engine = createEntitlementEngine({ db: app.db, ttlMs: 60_000, graceMs: 7 * 86_400_000, now: () => clock })
  const c = await adminClient(db)
  const endsAt = clock + 30_000
  await c.query('INSERT INTO tenant_contracts (tenant_id, features, starts_at, ends_at) ' +
    "VALUES ($1, '{\"recording_mode\": true}', now() - interval '1 minute', to_timestamp($2 / 1000.0))", [t.tenant!.id, endsAt])
  await c.query('UPDATE tenants SET trial_ends_at = to_timestamp($2 / 1000.0) WHERE id = $1', [t.tenant!.id, clock + 45_000])

  assert.equal((await engine.check(t.tenant!.id, 'recording_mode')).allowed, true)
  assert.equal((await engine.check(t.tenant!.id, 'seats')).allowed, true)
  const misses = engine.stats.misses
  clock = endsAt - 1
  assert.equal((await engine.check(t.tenant!.id, 'recording_mode')).allowed, true)
  assert.equal(engine.stats.misses, misses, 'still served from the cache')
  clock = endsAt
  const ended = await engine.check(t.tenant!.id, 'recording_mode')
  assert.deepEqual([ended.allowed, ended.source], [false, 'plan'], 'the contract ended at its second, with nothing written')

  clock += 15_000 // the trial has ended: past due (grace), seats still allowed
  const seats = await engine.check(t.tenant!.id, 'seats')
  assert.equal(seats.allowed, true)
  assert.match(seats.reason, /past due/)
  clock += 8 * 86_400_000 // grace over: treated as suspended
  assert.deepEqual(await engine.check(t.tenant!.id, 'seats'),
    { allowed: false, limit: 0, source: 'lifecycle', reason: 'tenant is suspended: read-only' })
})

test('writes: the lifecycle in force decides, dates on time with a warm cache (fake clock)', async () => {
  const t = await signup(app)
  let clock = Date.now()
  const graceMs = 7 * 86_400_000
  const engine = createEntitlementEngine({ db: app.db, ttlMs: 365 * 86_400_000, graceMs, now: () => clock })
  const trialEnd = clock + 45_000
  await (await adminClient(db)).query('UPDATE tenants SET trial_ends_at = to_timestamp($2 / 1000.0) WHERE id = $1',
    [t.tenant!.id, trialEnd])

  assert.deepEqual(await engine.checkWrites(t.tenant!.id), { allowed: true, limit: null, source: 'lifecycle', reason: 'tenant is trial' })
  const loads = engine.stats.loads
  clock = trialEnd - 1
  assert.equal((await engine.checkWrites(t.tenant!.id)).allowed, true)
  assert.equal(engine.stats.loads, loads, 'served from the cache')
  clock = trialEnd // the trial ended: past due, writes go on for the grace period
  assert.deepEqual(await engine.checkWrites(t.tenant!.id),
    { allowed: true, limit: null, source: 'lifecycle', reason: 'tenant is past due: writes go on for the grace period' })
  assert.equal(engine.stats.loads, loads + 1, 'the cached answer ended with the trial')
  clock = trialEnd + graceMs // grace over: read-only, although nothing was written
  assert.deepEqual(await engine.checkWrites(t.tenant!.id),
    { allowed: false, limit: null, source: 'lifecycle', reason: 'tenant is suspended: read-only' })
})

test(
  'concurrent misses of a tenant share one read; a read that overlaps a change answers its own request but is never cached',
  { timeout: 20_000 }, async () => {
    const t = await signup(app)
    const tenantId = t.tenant!.id
    // The engine's own reads, counted, and held back when a test needs one in flight.
    let reads = 0
    let found = false
    let gate: Promise<void> | null = null
    let failing = false
    const counted: Database = {
      ...app.db,
      async withTenant (id, fn) {
        reads++
        if (failing) throw new Error('connection lost')
        const state = await app.db.withTenant(id, fn)
        found = true
        if (gate) await gate
        return state
      }
    }
    const engine = createEntitlementEngine({ db: counted, ttlMs: 60_000, graceMs: 7 * 86_400_000 })
    const c = await adminClient(db)
    /** Starts a check whose read finds the current plan, then waits until released. */
    async function overlapping (tenant = tenantId) {
      let release!: () => void
      gate = new Promise<void>(resolve => { release = resolve })
      found = false
      const check = engine.check(tenant, 'seats')
      await waitFor(() => found, { what: 'the slow read to have read' })
      gate = null
      return { check, release }
    }

    // The stampede: 50 checks find the cache cold at once.
    const decisions = await Promise.all(Array.from({ length: 50 }, () => engine.check(tenantId, 'seats')))
    assert.equal(reads, 1, 'one read for 50 concurrent misses')
    assert.equal(engine.stats.loads, 1)
    assert.ok(decisions.every(d => d.allowed && d.limit === 3), 'each got the free plan\'s decision')

    // The overlap: a read finds the free plan, and before it is answered the plan changes.
    engine.invalidate(tenantId)
    const first = await overlapping()
    await c.query("UPDATE tenants SET plan = 'pro' WHERE id = $1", [tenantId])
    engine.emitChange('entitlement.changed', tenantId)
    // A check after the change does not join the read that started before it.
    assert.equal((await engine.check(tenantId, 'seats')).limit, 25)
    assert.equal(reads, 3)
    first.release()
    assert.equal((await first.check).limit, 3, 'the overlapping read answers its own request with what it found')
    assert.equal((await engine.check(tenantId, 'seats')).limit, 25, 'and did not put it in the cache')
    assert.equal(reads, 3, 'the cache holds the read made after the change')

    // The same with the whole cache dropped (the broadcast listener's reconnect) instead of one
    // tenant's, for a tenant this engine has never invalidated.
    const other = (await signup(app)).tenant!.id
    const second = await overlapping(other)
    await c.query("UPDATE tenants SET plan = 'enterprise' WHERE id = $1", [other])
    engine.invalidateAll()
    second.release()
    assert.equal((await second.check).limit, 3)
    assert.equal((await engine.check(other, 'seats')).limit, null, 'the read from before the drop was not cached')

    // A read that fails is shared by the checks that came meanwhile, and not afterwards.
    engine.invalidateAll()
    failing = true
    const before = reads
    const failed = await Promise.allSettled([engine.check(tenantId, 'seats'), engine.check(tenantId, 'seats')])
    assert.deepEqual(failed.map(r => r.status), ['rejected', 'rejected'])
    assert.equal(reads, before + 1, 'one read for both')
    failing = false
    assert.equal((await engine.check(tenantId, 'seats')).limit, 25, 'the next miss reads again')
  })

test('three instances with broadcast: a downgrade through A is denied on B and C within 1 s', async () => {
  const config = testConfig(db, { ENTITLEMENT_BROADCAST_ENABLED: true, ENTITLEMENT_CACHE_TTL_MS: 60_000 })
  const a = await buildTestApp(config)
  const b = await buildTestApp(config)
  const c = await buildTestApp(config)
  await waitFor(() => [a, b, c].every(x => x.entitlementBroadcast!.connected), { what: 'listeners up' })
  const t = await signup(a)
  await setPlan(a, t.tenant!.id, 'pro')
  for (const x of [a, b, c]) assert.equal((await check(x, t, 'recording_mode')).allowed, true) // warm every cache
  const started = Date.now()
  assert.equal((await setPlan(a, t.tenant!.id, 'free')).statusCode, 200)
  await waitFor(async () => !(await check(b, t, 'recording_mode')).allowed && !(await check(c, t, 'recording_mode')).allowed,
    { timeoutMs: 1000, intervalMs: 10, what: 'denial on B and C' })
  console.log(`# downgrade seen on B and C after ${Date.now() - started} ms`)
  assert.equal(a.entitlements.stats.invalidations > 0, true)
})

test('broadcast off: B keeps its cached ALLOW until the TTL (the documented gap)', async () => {
  const config = testConfig(db, { ENTITLEMENT_BROADCAST_ENABLED: false, ENTITLEMENT_CACHE_TTL_MS: 800 })
  const a = await buildTestApp(config)
  const b = await buildTestApp(config)
  const t = await signup(a)
  await setPlan(a, t.tenant!.id, 'pro')
  assert.equal((await check(b, t, 'recording_mode')).allowed, true)
  await setPlan(a, t.tenant!.id, 'free')
  assert.equal((await check(a, t, 'recording_mode')).allowed, false, 'A invalidated itself')
  assert.equal((await check(b, t, 'recording_mode')).allowed, true, 'B still serves its cached ALLOW')
  await waitFor(async () => !(await check(b, t, 'recording_mode')).allowed, { timeoutMs: 3000, what: 'TTL expiry on B' })
})

test('backoff: 1 s, 2 s, 4 s … capped at 30 s', () => {
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 10].map(n => backoffDelay(n)), [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000])
})

test(
  'listener: echo suppressed, malformed payload ignored, killed backend → reconnect after the backoff and a full invalidation',
  async () => {
    const logs = captureLogs()
    const a = await buildTestApp(testConfig(db, { ENTITLEMENT_BROADCAST_ENABLED: true }))
    const b = await buildTestApp(testConfig(db, { ENTITLEMENT_BROADCAST_ENABLED: true, LOG_LEVEL: 'info' }), { logs })
    await waitFor(() => a.entitlementBroadcast!.connected && b.entitlementBroadcast!.connected, { what: 'listeners up' })
    const t = await signup(b)
    const c = await adminClient(db)

    // A change made through B comes back to B on the channel and is dropped as an echo; A applies it.
    await setPlan(b, t.tenant!.id, 'pro')
    await waitFor(() => b.entitlementBroadcast!.echoes === 1 && a.entitlementBroadcast!.received === 1,
      { what: 'echo on B, delivery on A' })
    assert.equal(b.entitlementBroadcast!.received, 0)

    // Malformed payloads are logged and ignored; the listener stays up.
    await c.query("SELECT pg_notify('govula_entitlement_changed', 'not json'), " +
      "pg_notify('govula_entitlement_changed', '{\"type\":\"drop.tables\",\"tenantId\":\"x\"}')")
    await waitFor(() => b.entitlementBroadcast!.dropped === 2, { what: 'malformed payloads dropped' })
    assert.equal(logs.lines.filter(l => l.msg === 'malformed entitlement notification ignored').length, 2)
    assert.equal(b.entitlementBroadcast!.connected, true)

    // Warm B's cache, kill its listener backend, and change the plan while it is down.
    assert.equal((await check(b, t, 'recording_mode')).allowed, true)
    const killedAt = Date.now()
    const killed = await c.query(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'govula-broadcast' AND datname = current_database()")
    assert.ok(killed.rowCount! >= 2)
    await waitFor(() => !b.entitlementBroadcast!.connected, { what: 'the loss to be noticed' })
    await b.readiness.refresh()
    assert.equal(b.readiness.report().checks.find(k => k.name === 'entitlement-broadcast')?.ok, false)
    assert.equal(b.readiness.report().status, 'ready', 'informational: degraded, not failing')
    await c.query("UPDATE tenants SET plan = 'free' WHERE id = $1", [t.tenant!.id]) // a change no NOTIFY announced

    await waitFor(() => b.entitlementBroadcast!.connected, { timeoutMs: 5000, what: 'reconnect' })
    assert.ok(Date.now() - killedAt >= 900, 'the first retry waits the 1 s backoff')
    assert.equal(b.entitlementBroadcast!.reconnects, 1)
    // Notifications sent while it was down are lost, so the reconnect dropped the whole cache.
    assert.equal((await check(b, t, 'recording_mode')).allowed, false)
    assert.ok(logs.lines.some(l => String(l.msg).startsWith('entitlement broadcast listener lost its connection')))
  })

test('database unreachable at boot: the service boots, warns, and the engine keeps its TTL behaviour', async () => {
  const proxy = await proxyFor(db.runtimeUrl)
  const logs = captureLogs()
  const config = testConfig(db, {
    ENTITLEMENT_BROADCAST_ENABLED: true,
    LOG_LEVEL: 'info',
    DATABASE_DIRECT_URL: viaPort(db.runtimeUrl, proxy.port)
  })
  proxy.down()
  const x = await buildTestApp(config, { logs })
  await waitFor(() => logs.lines.some(l => String(l.msg).startsWith('entitlement broadcast listener lost')), { what: 'a warning' })
  const t = await signup(x)
  assert.equal((await check(x, t, 'seats')).allowed, true, 'entitlements still work without the listener')
  proxy.up()
  await waitFor(() => x.entitlementBroadcast!.connected,
    { timeoutMs: 6000, what: 'the listener to connect once the database is reachable' })
})

test('shutdown closes the listener before the pool', async () => {
  const logs = captureLogs()
  const x = await buildTestApp(testConfig(db, { ENTITLEMENT_BROADCAST_ENABLED: true, LOG_LEVEL: 'info' }), { logs, autoClose: false })
  await waitFor(() => x.entitlementBroadcast!.connected, { what: 'listener up' })
  await x.close()
  const closed = logs.lines.filter(l => typeof l.closed === 'string').map(l => l.closed)
  assert.deepEqual(closed, ['scheduler', 'entitlement-broadcast', 'readiness', 'db'])
})
