// The entitlement broadcast listener's backend killed repeatedly.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { SessionEnvelope } from '../services/accounts.js'
import { adminClient, buildTestApp, captureLogs, createTestDatabase, testConfig, waitFor } from './support/app.js'
import { bearer, loginOperator, signup } from './support/actors.js'
import { proxyFor, viaPort } from './support/fault-proxy.js'

const db = await createTestDatabase()
const admin = await adminClient(db)

type App = Awaited<ReturnType<typeof buildTestApp>>

// `seats` is allowed on every plan, with a different limit on each: ALLOW decisions are the
// ones the engine caches, so a stale cache would show the old plan's limit.
const SEATS: Record<string, number | null> = { free: 3, pro: 25, enterprise: null }

async function seats (app: App, actor: SessionEnvelope) {
  const res = await app.inject({ url: '/api/v1/entitlements/check?feature=seats', headers: bearer(actor) })
  assert.equal(res.statusCode, 200, res.body)
  return (res.json() as { limit: number | null }).limit
}

/** A plan change no NOTIFY announces (as if made while the listener could not hear it). */
const silentPlanChange = (tenantId: string, plan: string) => admin.query('UPDATE tenants SET plan = $2 WHERE id = $1', [tenantId, plan])

/** Serves a tenant GET, liveness and readiness: the process is up and answering. */
async function assertServing (app: App, actor: SessionEnvelope) {
  assert.equal((await app.inject('/health')).statusCode, 200)
  assert.equal((await app.inject({ url: '/api/v1/tenant', headers: bearer(actor) })).statusCode, 200)
  const ready = await app.inject('/api/v1/health')
  assert.equal(ready.statusCode, 200, 'the listener is not critical: readiness stays 200')
}

test(
  'listener backend killed three times: each time it reconnects after the 1 s backoff, never crashes, and drops the caches',
  { timeout: 20_000 }, async () => {
    const logs = captureLogs()
    const app = await buildTestApp(testConfig(db, {
      ENTITLEMENT_BROADCAST_ENABLED: true,
      ENTITLEMENT_CACHE_TTL_MS: 600_000,
      LOG_LEVEL: 'info'
    }), { logs })
    const state = app.entitlementBroadcast!
    await waitFor(() => state.connected, { what: 'the listener up' })
    const actor = await signup(app)
    const tenantId = actor.tenant!.id

    let plan = 'free'
    const cycle = ['pro', 'enterprise', 'free']
    for (const [i, next] of cycle.entries()) {
      assert.equal(await seats(app, actor), SEATS[plan], 'the cache is warm with the current plan')
      const invalidations = app.entitlements.stats.invalidations
      const killedAt = Date.now()
      const killed = await admin.query(
        'SELECT pg_terminate_backend(pid) FROM pg_stat_activity ' +
        "WHERE datname = current_database() AND application_name = 'govula-broadcast'")
      assert.equal(killed.rowCount, 1, 'one listener backend')
      await waitFor(() => !state.connected, { what: `loss ${i + 1} to be noticed` })

      await silentPlanChange(tenantId, next)
      const meanwhile = await seats(app, actor)
      // The retry comes 1 s after the kill; on a slow machine it can overtake the change and this
      // read. Only a read that finished before the retry began must show the staleness it clears.
      if (state.reconnects === i) {
        assert.equal(meanwhile, SEATS[plan],
          'made while the listener was away, the change is unseen: the cache (TTL 10 min) serves the old plan')
      } else {
        console.log(`# loss ${i + 1}: the reconnect overtook the stale read; the invalidation is still asserted below`)
      }
      await assertServing(app, actor)

      await waitFor(() => state.connected, { timeoutMs: 5000, what: `reconnect ${i + 1}` })
      const took = Date.now() - killedAt
      assert.ok(took >= 900, `reconnected ${took} ms after the kill: the first retry waits 1 s`)
      assert.ok(took < 3000, `reconnected ${took} ms after the kill: the backoff starts again at 1 s after a good connection`)
      assert.equal(state.reconnects, i + 1)
      assert.ok(app.entitlements.stats.invalidations > invalidations, 'the whole cache was dropped on reconnect')
      assert.equal(await seats(app, actor), SEATS[next], 'the change made while it was away is seen')
      plan = next
    }
    await assertServing(app, actor)
    const losses = logs.lines.filter(l => String(l.msg).startsWith('entitlement broadcast listener lost its connection'))
    assert.equal(losses.length, cycle.length, 'one warning per loss')
    assert.equal(logs.lines.filter(l => l.msg === 'entitlement broadcast listening').length, cycle.length + 1)
    assert.deepEqual(logs.lines.filter(l => Number(l.level) >= 50), [], 'no error lines')

    // Still a working listener: a change made through another instance arrives by NOTIFY.
    const other = await buildTestApp(testConfig(db, { ENTITLEMENT_BROADCAST_ENABLED: true }))
    const operator = await loginOperator(other)
    const received = state.received
    const res = await other.inject({
      method: 'PUT', url: `/api/v1/operator/tenants/${tenantId}/plan`, headers: bearer(operator), payload: { plan: 'pro' }
    })
    assert.equal(res.statusCode, 200, res.body)
    await waitFor(() => state.received > received, { what: 'the NOTIFY to arrive' })
    assert.equal(await seats(app, actor), SEATS.pro)
  })

test(
  'listener cut off while Postgres stays unreachable: retries at 1 s, 2 s, 4 s; connects once it can and drops the caches',
  { timeout: 20_000 }, async () => {
    const proxy = await proxyFor(db.runtimeUrl)
    // Only the listener goes through the proxy (DATABASE_DIRECT_URL); the pool stays direct and serves throughout.
    const app = await buildTestApp(testConfig(db, {
      ENTITLEMENT_BROADCAST_ENABLED: true,
      ENTITLEMENT_CACHE_TTL_MS: 600_000,
      DATABASE_DIRECT_URL: viaPort(db.runtimeUrl, proxy.port)
    }))
    const state = app.entitlementBroadcast!
    await waitFor(() => state.connected, { what: 'the listener up' })
    const actor = await signup(app)
    assert.equal(await seats(app, actor), SEATS.free)

    const before = proxy.accepted.length
    const downAt = Date.now()
    proxy.down()
    await waitFor(() => !state.connected, { what: 'the loss to be noticed' })
    await silentPlanChange(actor.tenant!.id, 'pro')
    await waitFor(() => proxy.accepted.length - before >= 2, { timeoutMs: 5000, what: 'two refused reconnect attempts' })
    await assertServing(app, actor)
    assert.equal(await seats(app, actor), SEATS.free, 'the cache still holds the old plan')
    proxy.up()
    await waitFor(() => state.connected, { timeoutMs: 6000, what: 'the third attempt to connect' })

    const attempts = proxy.accepted.slice(before)
    const gaps = [attempts[0]! - downAt, attempts[1]! - attempts[0]!, attempts[2]! - attempts[1]!]
    console.log(`# reconnect attempts after ${gaps.join(', ')} ms`)
    for (const [i, expected] of [1000, 2000, 4000].entries()) {
      assert.ok(gaps[i]! >= expected - 100 && gaps[i]! <= expected + 1000,
        `attempt ${i + 1} waited ${gaps[i]} ms, the backoff says ${expected}`)
    }
    assert.equal(attempts.length, 3)
    assert.equal(state.reconnects, 3)
    assert.equal(await seats(app, actor), SEATS.pro, 'the caches were dropped on reconnect')
  })
