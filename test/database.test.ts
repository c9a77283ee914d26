import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { test } from 'node:test'
import pg from 'pg'
import { buildTestApp, createTestDatabase, testConfig, waitFor } from './support/app.js'

const db = await createTestDatabase()
// One connection: every transaction below reuses it, so a leak from one to the next would show.
const app = await buildTestApp(testConfig(db, { DB_MAX_CONNECTIONS: 1 }))
const tenantSetting = 'SELECT app_tenant_id()::text AS t'

test('withTenant sets the tenant for its transaction only', async () => {
  const tenant = randomUUID()
  const inside = await app.db.withTenant(tenant, c => c.query(tenantSetting))
  assert.equal(inside.rows[0].t, tenant)
  const afterwards = await app.db.query(tenantSetting)
  assert.ok(!afterwards.rows[0].t, 'the setting does not outlive the transaction on the pooled connection')
})

test('withTenant rolls back on error and releases the connection', async () => {
  for (let i = 0; i < 5; i++) {
    await assert.rejects(app.db.withTenant(randomUUID(), async c => {
      await c.query('SELECT 1')
      throw new Error('mid-transaction failure')
    }), /mid-transaction failure/)
  }
  await assert.rejects(app.db.withTenant(randomUUID(), c => c.query('SELECT * FROM no_such_table')), /does not exist/)
  // With one connection in the pool, a leaked or stuck-in-transaction client would hang or fail here.
  const { rows } = await app.db.withTenant(randomUUID(), c => c.query('SELECT txid_current_if_assigned() IS NULL AS fresh'))
  assert.equal(rows[0].fresh, true)
  assert.equal(app.db.pool.totalCount, 1)
  assert.equal(app.db.pool.waitingCount, 0)
})

test('withTransaction commits and rolls back', async () => {
  const value = await app.db.withTransaction(async c => (await c.query('SELECT 41 + 1 AS v')).rows[0].v)
  assert.equal(value, 42)
  await assert.rejects(app.db.withTransaction(async () => { throw new Error('nope') }), /nope/)
  const { rows } = await app.db.query('SELECT now() = statement_timestamp() AS autocommit')
  assert.equal(rows[0].autocommit, true, 'no transaction left open')
})

test('a tenant id that is not a UUID is refused before reaching SQL', async () => {
  await assert.rejects(app.db.withTenant("x'); DROP TABLE schema_migrations; --", async () => 1), /must be a UUID/)
  assert.equal((await app.db.query('SELECT count(*)::int AS n FROM schema_migrations')).rows[0].n > 0, true)
})

test('connections killed under the pool are logged, never crash, and the pool recovers', async () => {
  await app.db.query('SELECT 1') // make sure an idle connection exists
  const admin = new pg.Client({ connectionString: db.adminUrl })
  await admin.connect()
  const killed = await admin.query(
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND usename = 'govula_app' " +
    "AND application_name LIKE 'govula-core:%'")
  await admin.end()
  assert.ok(killed.rowCount! >= 1)
  await waitFor(async () => (await app.db.query('SELECT 1 AS ok')).rows[0].ok === 1, { what: 'the pool to reconnect' })
  const tenant = randomUUID()
  assert.equal((await app.db.withTenant(tenant, c => c.query(tenantSetting))).rows[0].t, tenant)
})
