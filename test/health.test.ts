import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import { adminClient, buildTestApp, createTestDatabase, testConfig, waitFor } from './support/app.js'
import { bearer, signup } from './support/actors.js'
import { proxyFor, viaPort } from './support/fault-proxy.js'

const db = await createTestDatabase()

test('liveness is 200 without auth or database; readiness lists its checks', async () => {
  const app = await buildTestApp(testConfig(db))
  const live = await app.inject('/health')
  assert.equal(live.statusCode, 200)
  assert.deepEqual(live.json(), { status: 'ok' })
  const ready = await app.inject('/api/v1/health')
  assert.equal(ready.statusCode, 200)
  const body = ready.json()
  assert.equal(body.status, 'ready')
  assert.deepEqual(body.checks.map((c: { name: string }) => c.name),
    ['database', 'migrations', 'request-context', 'runtime-role', 'pool-sizing', 'statement-privacy', 'row-level-security'])
  // pool-sizing is informational and counts the runtime role's connections server-wide, so a
  // test file running beside this one can tip it; every check that gates readiness must pass.
  const gating = body.checks.filter((c: { name: string }) => c.name !== 'pool-sizing')
  assert.deepEqual(gating.filter((c: { ok: boolean }) => !c.ok), [])
})

test('database down: liveness 200, readiness 503 naming the check; back by itself when it returns', async () => {
  const proxy = await proxyFor(db.runtimeUrl)
  const app = await buildTestApp(testConfig(db, {
    DATABASE_URL: viaPort(db.runtimeUrl, proxy.port),
    MIGRATION_DATABASE_URL: viaPort(db.ownerUrl, proxy.port),
    READINESS_CHECK_INTERVAL_MS: 100,
    DB_CONNECTION_TIMEOUT: 500
  }))
  assert.equal((await app.inject('/api/v1/health')).statusCode, 200)

  proxy.down()
  // The first 503 may come from another check failing first; wait for the one that names the database.
  const databaseCheck = (res: { json: () => { checks: Array<{ name: string, ok: boolean }> } }) =>
    res.json().checks.find(c => c.name === 'database')
  const down = await waitFor(async () => {
    const res = await app.inject('/api/v1/health')
    return res.statusCode === 503 && databaseCheck(res)?.ok === false ? res : undefined
  }, { what: 'readiness 503 naming the database' })
  const body = down.json()
  assert.equal(body.status, 'unavailable')
  assert.doesNotMatch(JSON.stringify(body), /govula_app|password|127\.0\.0\.1/, 'no hosts or credentials in a public answer')
  assert.equal((await app.inject('/health')).statusCode, 200, 'liveness never depends on the database')

  proxy.up()
  await waitFor(async () => (await app.inject('/api/v1/health')).statusCode === 200, { what: 'readiness back to 200' })
})

test('database unreachable at boot: the app still boots, unready, and recovers', async () => {
  const proxy = await proxyFor(db.runtimeUrl)
  proxy.down()
  const app = await buildTestApp(testConfig(db, {
    DATABASE_URL: viaPort(db.runtimeUrl, proxy.port),
    MIGRATION_DATABASE_URL: viaPort(db.ownerUrl, proxy.port),
    READINESS_CHECK_INTERVAL_MS: 100,
    DB_CONNECTION_TIMEOUT: 500
  }))
  const res = await app.inject('/api/v1/health')
  assert.equal(res.statusCode, 503)
  assert.equal((await app.inject('/health')).statusCode, 200)
  proxy.up()
  await waitFor(async () => (await app.inject('/api/v1/health')).statusCode === 200, { what: 'readiness after the database appears' })
})

test('pool sizing: a pool too big for max_connections is a warning, not a failure', async () => {
  const app = await buildTestApp(testConfig(db, { DB_MAX_CONNECTIONS: 1000 }))
  const body = (await app.inject('/api/v1/health')).json()
  assert.equal(body.status, 'ready', 'informational')
  const sizing = body.checks.find((c: { name: string }) => c.name === 'pool-sizing')
  assert.equal(sizing.ok, false)
  assert.match(sizing.detail, /DB_MAX_CONNECTIONS 1000 × (1 replica|\d+ replicas) = \d+ > 0\.8 × max_connections \d+/)
})

test('an unsafe runtime role keeps the instance unready', async () => {
  // The owner role owns the tables (RLS would not bind it): not fit to serve requests.
  const asOwner = await buildTestApp(testConfig(db, { DATABASE_URL: db.ownerUrl }))
  const owner = (await asOwner.inject('/api/v1/health')).json()
  assert.equal(owner.status, 'unavailable')
  assert.match(owner.checks.find((c: { name: string }) => c.name === 'runtime-role').detail,
    /^the runtime role owns \d+ relations.*owns the database/)
  // A superuser ignores row-level security altogether.
  const asSuper = await buildTestApp(testConfig(db, { DATABASE_URL: db.adminUrl }))
  const sup = (await asSuper.inject('/api/v1/health')).json()
  assert.equal(sup.status, 'unavailable')
  assert.match(sup.checks.find((c: { name: string }) => c.name === 'runtime-role').detail, /is superuser/)
})

test('a request refused a connection turns readiness 503 at once, without waiting for a round; one killed backend does not', async () => {
  const proxy = await proxyFor(db.runtimeUrl)
  const app = await buildTestApp(testConfig(db, {
    DATABASE_URL: viaPort(db.runtimeUrl, proxy.port),
    // No round runs during the test: whatever turns readiness comes from the request path.
    READINESS_CHECK_INTERVAL_MS: 600_000,
    DB_CONNECTION_TIMEOUT: 500
  }))
  const actor = await signup(app)
  assert.equal((await app.inject('/api/v1/health')).statusCode, 200)

  // One backend killed under an idle connection: a request may fail on it, Postgres is up.
  const admin = await adminClient(db)
  after(() => admin.end())
  const { rowCount } = await admin.query(
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'govula-core:%'")
  assert.ok(rowCount! >= 1)
  await app.inject({ url: '/api/v1/tenant', headers: bearer(actor) })
  assert.equal((await app.inject('/api/v1/health')).statusCode, 200, 'a killed connection says nothing about the database')

  // The proxy stops listening: a new connection is refused (ECONNREFUSED), as during a restart.
  await proxy.close()
  await waitFor(() => app.pg.pool.totalCount === 0, { what: 'the cut connections to leave the pool' })
  const res = await app.inject({ url: '/api/v1/tenant', headers: bearer(actor) })
  assert.equal(res.statusCode, 503)
  const ready = await app.inject('/api/v1/health')
  assert.equal(ready.statusCode, 503)
  assert.equal(ready.json().checks.find((c: { name: string }) => c.name === 'database').ok, false)
})
