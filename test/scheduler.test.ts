import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { App } from '../app.js'
import { adminClient, buildTestApp, captureLogs, createTestDatabase, testConfig, waitFor } from './support/app.js'
import { bearer, loginOperator, signup } from './support/actors.js'

const db = await createTestDatabase()
const admin = await adminClient(db)

const cron = (app: App, job: string, secret?: string) => app.inject({
  method: 'POST',
  url: `/api/internal/cron/${job}`,
  headers: secret === undefined ? {} : { authorization: `Bearer ${secret}` }
})

/** The result of the first call to `job`'s endpoint that runs a tick of its own (the current slot may be taken). */
const freshTick = (app: App, job: string) => waitFor(async () => {
  const r = await cron(app, job, 'k')
  return r.json().ran ? r.json().result : undefined
}, { what: 'a fresh tick' })

test('three instances with the scheduler on, plus an external cron: each tick runs exactly once', async () => {
  let executions = 0
  const setup = (app: App) => {
    app.jobs.set('tick-counter', { intervalMs: 250, run: async () => { executions++; return { n: executions } } })
  }
  const config = testConfig(db, {
    ENABLE_SCHEDULER: true,
    ENABLE_INTERNAL_CRON: true,
    CRON_SECRET: 's3cret',
    JOB_LIFECYCLE_INTERVAL_S: 3600,
    JOB_PURGE_SESSIONS_INTERVAL_S: 3600
  })
  const apps = [await buildTestApp(config, { setup }), await buildTestApp(config, { setup }), await buildTestApp(config, { setup })]
  // An external cron hammers the same job meanwhile.
  const external: boolean[] = []
  const deadline = Date.now() + 2000
  while (Date.now() < deadline) {
    const res = await cron(apps[external.length % 3]!, 'tick-counter', 's3cret')
    assert.equal(res.statusCode, 200, res.body)
    external.push(res.json().ran)
    await new Promise(resolve => setTimeout(resolve, 50)) // pacing the load, not synchronising
  }
  await Promise.all(apps.map(a => a.close()))
  const { rows } = await admin.query<{ slot: Date, n: number }>(
    "SELECT slot, count(*)::int AS n FROM job_runs WHERE job = 'tick-counter' GROUP BY slot")
  assert.ok(rows.length >= 5, `several ticks ran (${rows.length})`)
  assert.ok(rows.every(r => r.n === 1))
  assert.equal(executions, rows.length, 'the job body ran once per recorded tick, never twice')
  assert.ok(external.includes(false), 'the external cron found ticks already taken')
})

test('internal cron: mount 404 unless enabled with a secret; constant-time secret check with rotation; unknown job 404', async () => {
  const off = await buildTestApp(testConfig(db))
  assert.equal((await cron(off, 'purge-sessions', 'x')).statusCode, 404)
  const noSecret = await buildTestApp(testConfig(db, { ENABLE_INTERNAL_CRON: true }))
  assert.equal((await cron(noSecret, 'purge-sessions', 'x')).statusCode, 404)

  const app = await buildTestApp(testConfig(db, { ENABLE_INTERNAL_CRON: true, CRON_SECRET: 'new-secret-value,old-secret' }))
  const missing = await cron(app, 'purge-sessions')
  assert.equal(missing.statusCode, 401)
  assert.equal(missing.json().code, 'AUTH_UNAUTHENTICATED')
  assert.equal((await cron(app, 'purge-sessions', 'new-secret-valuX')).statusCode, 401, 'wrong, same length')
  assert.equal((await cron(app, 'purge-sessions', 'short')).statusCode, 401, 'wrong length does not throw')
  assert.equal((await cron(app, 'purge-sessions', 'new-secret-value')).statusCode, 200)
  const old = await cron(app, 'lifecycle-transitions', 'old-secret')
  assert.equal(old.statusCode, 200, 'the old secret still works during rotation')
  assert.deepEqual(Object.keys(old.json()), ['job', 'ran', 'durationMs', 'result'])
  const unknown = await cron(app, 'mine-bitcoin', 'old-secret')
  assert.equal(unknown.statusCode, 404)
  assert.equal(unknown.json().code, 'NOT_FOUND')
})

test('two concurrent endpoint calls for one tick: exactly one runs', async () => {
  const app = await buildTestApp(testConfig(db, { ENABLE_INTERNAL_CRON: true, CRON_SECRET: 'k', JOB_PURGE_SESSIONS_INTERVAL_S: 3600 }), {
    setup (a) {
      a.jobs.set('slow-once', {
        intervalMs: 3_600_000,
        run: async () => { await new Promise(resolve => setTimeout(resolve, 100)); return { done: true } }
      })
    }
  })
  const [a, b] = await Promise.all([cron(app, 'slow-once', 'k'), cron(app, 'slow-once', 'k')])
  assert.deepEqual([a.json().ran, b.json().ran].sort(), [false, true])
  const winner = [a, b].find(r => r.json().ran)!.json()
  assert.deepEqual(winner.result, { done: true })
})

test('purge-sessions deletes revoked and expired families and keeps live ones', async () => {
  const app = await buildTestApp(testConfig(db, { ENABLE_INTERNAL_CRON: true, CRON_SECRET: 'k', JOB_PURGE_SESSIONS_INTERVAL_S: 1 }))
  const live = await signup(app)
  const loggedOut = await signup(app)
  const expired = await signup(app)
  assert.equal((await app.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(loggedOut) })).statusCode, 204)
  await admin.query("UPDATE auth_sessions SET absolute_expires_at = now() - interval '1 second' WHERE user_id = $1", [expired.user.id])
  // A refresh leaves the spent row holding its successor, sealed for the grace window; once
  // the window is over the job clears it (the spent row itself stays: it detects reuse).
  const refreshed = await app.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refreshToken: live.refreshToken } })
  assert.equal(refreshed.statusCode, 200)
  await admin.query("UPDATE auth_sessions SET rotated_at = now() - interval '1 hour' WHERE user_id = $1 AND rotated_at IS NOT NULL",
    [live.user.id])
  const sealed = async () =>
    (await admin.query('SELECT count(*)::int AS n FROM auth_sessions WHERE user_id = $1 AND grace_payload IS NOT NULL', [live.user.id]))
      .rows[0].n
  assert.equal(await sealed(), 1)
  const tick = await freshTick(app, 'purge-sessions')
  assert.ok(tick.cleared >= 1)
  assert.equal(await sealed(), 0)
  const left = async (userId: string) =>
    (await admin.query('SELECT count(*)::int AS n FROM auth_sessions WHERE user_id = $1', [userId])).rows[0].n
  assert.equal(await left(loggedOut.user.id), 0)
  assert.equal(await left(expired.user.id), 0)
  assert.equal(await left(live.user.id), 2, 'the live family: its spent row and its head')
  assert.equal((await app.inject({ url: '/api/v1/tenant', headers: bearer(refreshed.json()) })).statusCode, 200)
  // The spent token replayed after the window is still detected as reuse.
  assert.equal((await app.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refreshToken: live.refreshToken } })).statusCode,
    401)
})

test('lifecycle-transitions writes due transitions: trial end, grace end, contract end — with change events', async () => {
  const app = await buildTestApp(testConfig(db, { ENABLE_INTERNAL_CRON: true, CRON_SECRET: 'k', JOB_LIFECYCLE_INTERVAL_S: 1 }))
  const trial = await signup(app)
  const grace = await signup(app)
  const contract = await signup(app)
  await admin.query("UPDATE tenants SET trial_ends_at = now() - interval '1 hour' WHERE id = $1", [trial.tenant!.id])
  await admin.query("UPDATE tenants SET lifecycle = 'past_due', grace_ends_at = now() - interval '1 minute' WHERE id = $1",
    [grace.tenant!.id])
  await admin.query('INSERT INTO tenant_contracts (tenant_id, features, starts_at, ends_at) ' +
    "VALUES ($1, '{\"seats\": 99}', now() - interval '2 days', now() - interval '1 second')", [contract.tenant!.id])
  const changed: string[] = []
  app.entitlements.events.on('lifecycle.changed', (e: { tenantId: string }) => changed.push(e.tenantId))
  app.entitlements.events.on('contract.changed', (e: { tenantId: string }) => changed.push(e.tenantId))
  const res = await waitFor(async () => {
    const r = await cron(app, 'lifecycle-transitions', 'k')
    return r.json().ran ? r : undefined
  }, { what: 'a fresh tick' })
  assert.deepEqual(res.json().result, { trialsEnded: 1, gracesEnded: 1, contractsEnded: 1, failed: 0 })
  const state = async (id: string) =>
    (await admin.query('SELECT lifecycle, grace_ends_at > trial_ends_at AS grace_after_trial FROM tenants WHERE id = $1', [id])).rows[0]
  assert.deepEqual(await state(trial.tenant!.id), { lifecycle: 'past_due', grace_after_trial: true })
  assert.equal((await state(grace.tenant!.id)).lifecycle, 'suspended')
  assert.equal((await admin.query('SELECT 1 FROM tenant_contracts WHERE tenant_id = $1', [contract.tenant!.id])).rowCount, 0)
  assert.deepEqual(changed.sort(), [trial.tenant!.id, grace.tenant!.id, contract.tenant!.id].sort())
})

test('operators read the run history; members may not', async () => {
  const app = await buildTestApp(testConfig(db, { ENABLE_INTERNAL_CRON: true, CRON_SECRET: 'k' }), {
    setup (a) { a.jobs.set('always-fails', { intervalMs: 1, run: async () => { throw new Error('disk on fire') } }) }
  })
  assert.equal((await cron(app, 'always-fails', 'k')).statusCode, 500)
  const operator = await loginOperator(app)
  const res = await app.inject({ url: '/api/v1/operator/jobs?job=always-fails', headers: bearer(operator) })
  assert.equal(res.statusCode, 200)
  const [run] = res.json().runs
  assert.equal(run.outcome, 'failed')
  assert.equal(run.error, 'disk on fire')
  assert.equal(run.trigger, 'cron')
  assert.ok(run.instance && run.startedAt && run.finishedAt)
  const member = await signup(app)
  assert.equal((await app.inject({ url: '/api/v1/operator/jobs', headers: bearer(member) })).statusCode, 403)
})

test('shutdown while a job runs: no new ticks, the run is aborted at the deadline, all before the pool ends', async () => {
  const logs = captureLogs()
  let started = false
  const app = await buildTestApp(testConfig(db, {
    ENABLE_SCHEDULER: true,
    JOB_SHUTDOWN_DEADLINE_MS: 300,
    LOG_LEVEL: 'info',
    JOB_LIFECYCLE_INTERVAL_S: 3600,
    JOB_PURGE_SESSIONS_INTERVAL_S: 3600
  }), {
    logs,
    autoClose: false,
    setup (a) {
      a.jobs.set('stubborn', {
        intervalMs: 100,
        run: (signal) => new Promise((resolve, reject) => {
          started = true
          signal.addEventListener('abort', () => reject(new Error('aborted', { cause: signal.reason })))
        })
      })
    }
  })
  await waitFor(() => started, { what: 'the job to start' })
  const closing = Date.now()
  await app.close()
  assert.ok(Date.now() - closing >= 250, 'close waited for the running job')
  const closed = logs.lines.filter(l => typeof l.closed === 'string').map(l => l.closed)
  assert.deepEqual(closed, ['scheduler', 'readiness', 'db'])
  const { rows } = await admin.query("SELECT outcome FROM job_runs WHERE job = 'stubborn'")
  assert.deepEqual(rows.map(r => r.outcome), ['aborted'], 'one run, recorded as aborted, and no tick after close began')
})

test('audit-checkpoint signs the heads of every tenant\'s chains and the operator chain, once per head', async () => {
  const app = await buildTestApp(testConfig(db, { ENABLE_INTERNAL_CRON: true, CRON_SECRET: 'k', JOB_AUDIT_CHECKPOINT_INTERVAL_S: 1 }))
  const a = await signup(app)
  const b = await signup(app)
  const operator = await loginOperator(app) // an operator.login row heads the operator chain
  // Pro has audit_export (read at the end); the change is a tenant_operation_log row too.
  const upgrade = await app.inject({
    method: 'PUT', url: `/api/v1/operator/tenants/${a.tenant!.id}/plan`, headers: bearer(operator), payload: { plan: 'pro' }
  })
  assert.equal(upgrade.statusCode, 200, upgrade.body)
  const tick = () => freshTick(app, 'audit-checkpoint')
  const first = await tick()
  assert.ok(first.tenants >= 2)
  const stored = async (tenantId: string | null) => (await admin.query(
    'SELECT chain, seq FROM audit_checkpoints WHERE tenant_id IS NOT DISTINCT FROM $1 ORDER BY chain', [tenantId])).rows
  for (const t of [a, b]) {
    const heads = (await admin.query(`SELECT 'audit_log' AS chain, max(seq) AS seq FROM audit_log WHERE tenant_id = $1
      UNION ALL SELECT 'tenant_operation_log', max(seq) FROM tenant_operation_log WHERE tenant_id = $1
      ORDER BY chain`, [t.tenant!.id])).rows
    assert.deepEqual(await stored(t.tenant!.id), heads)
  }
  assert.equal((await stored(null)).length, 1)
  // Nothing appended since: the next tick signs nothing new.
  const count = async () => (await admin.query('SELECT count(*)::int AS n FROM audit_checkpoints')).rows[0].n
  const before = await count()
  await tick()
  assert.equal(await count(), before)
  // The tenant's own verification holds its chain to what the job signed.
  const verify = await app.inject({ url: '/api/v1/audit/verify', headers: bearer(a) })
  assert.equal(verify.statusCode, 200)
  assert.equal(verify.json().valid, true)
  assert.ok(verify.json().checkpointsChecked >= 1)
})

test('purge-recordings runs through the runner: events past retention go, the rest stay', async () => {
  const app = await buildTestApp(testConfig(db, { ENABLE_INTERNAL_CRON: true, CRON_SECRET: 'k', JOB_PURGE_RECORDINGS_INTERVAL_S: 1 }))
  const t = await signup(app) // free plan: 7 days
  await admin.query(`INSERT INTO recording_events (tenant_id, id, recording_id, type, occurred_at, payload) VALUES
    ($1, gen_random_uuid(), 'r', 'click', date_trunc('milliseconds', now() - interval '8 days'), '{}'),
    ($1, gen_random_uuid(), 'r', 'click', date_trunc('milliseconds', now() - interval '6 days'), '{}')`, [t.tenant!.id])
  const result = await freshTick(app, 'purge-recordings')
  assert.ok(result.deleted >= 1)
  const left = await admin.query("SELECT occurred_at > now() - interval '7 days' AS recent FROM recording_events WHERE tenant_id = $1",
    [t.tenant!.id])
  assert.deepEqual(left.rows, [{ recent: true }])
})

test('without AUDIT_SIGNING_KEY in production there is no audit-checkpoint job', async () => {
  const app = await buildTestApp(testConfig(db, { NODE_ENV: 'production', ENABLE_INTERNAL_CRON: true, CRON_SECRET: 'k' }))
  assert.equal(app.jobs.has('audit-checkpoint'), false)
  assert.deepEqual([...app.jobs.keys()].sort(), ['lifecycle-transitions', 'purge-recordings', 'purge-sessions'])
  assert.equal((await cron(app, 'audit-checkpoint', 'k')).statusCode, 404)
})
