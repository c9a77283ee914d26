import assert from 'node:assert/strict'
import { test } from 'node:test'
import { rlsViolations } from '../infra/database-checks.js'
import { buildTestApp, connectClient, createTestDatabase, testConfig } from './support/app.js'
import { bearer, signup } from './support/actors.js'

const db = await createTestDatabase()
const app = await buildTestApp(testConfig(db, { DB_MAX_CONNECTIONS: 2 }), {
  setup (app) {
    // Reads every membership row it can see, with no WHERE: only row-level security keeps
    // other tenants out. `fail` throws mid-transaction, after the read.
    app.get('/test/visible-members', { config: { auth: 'tenant', rateLimit: false, tenantRateLimit: false } }, async (request) => {
      return request.withTenant(async (client) => {
        const { rows } = await client.query<{ tenant_id: string }>('SELECT tenant_id FROM memberships')
        if ((request.query as { fail?: string }).fail) throw new Error('mid-transaction failure')
        return { tenants: rows.map(r => r.tenant_id) }
      })
    })
  }
})

const a = await signup(app, { email: 'alice@a.example', tenantName: 'Tenant A' })
const b = await signup(app, { email: 'bob@b.example', tenantName: 'Tenant B' })
const aTenant = a.tenant!.id
const bTenant = b.tenant!.id

test('catalog: every tenant_id table has RLS enabled, forced and a policy; the runtime role is least-privileged', async () => {
  const admin = await connectClient(db.adminUrl)
  assert.deepEqual(await rlsViolations(admin), [])
  const { rows: tables } = await admin.query<{ relname: string }>(
    "SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' " +
    "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'")
  for (const t of ['memberships', 'auth_sessions']) assert.ok(tables.some(r => r.relname === t), `${t} is a tenant table`)

  const { rows: [role] } = await admin.query(`
    SELECT r.rolsuper, r.rolbypassrls,
           (SELECT count(*)::int FROM pg_class c WHERE c.relowner = r.oid) AS owned
      FROM pg_roles r WHERE r.rolname = 'govula_app'`)
  assert.deepEqual(role, { rolsuper: false, rolbypassrls: false, owned: 0 })
})

test('catalog check fails when a policy is dropped or RLS is not forced (scratch database)', async () => {
  const scratch = await createTestDatabase()
  const admin = await connectClient(scratch.adminUrl)
  await admin.query('DROP POLICY tenant_isolation ON memberships')
  await admin.query('ALTER TABLE auth_sessions NO FORCE ROW LEVEL SECURITY')
  await admin.query('CREATE TABLE widgets (id int, tenant_id uuid)')
  assert.deepEqual(await rlsViolations(admin), [
    { table: 'auth_sessions', problem: 'row level security is not forced' },
    { table: 'memberships', problem: 'has no policy' },
    { table: 'widgets', problem: 'row level security is not enabled' },
    { table: 'widgets', problem: 'row level security is not forced' },
    { table: 'widgets', problem: 'has no policy' }
  ])
  // Readiness refuses to serve on such a database.
  const unsafe = await buildTestApp(testConfig(scratch))
  const body = (await unsafe.inject('/api/v1/health')).json()
  assert.equal(body.status, 'unavailable')
  assert.match(body.checks.find((c: { name: string }) => c.name === 'row-level-security').detail, /memberships has no policy/)
})

test('as the runtime role: another tenant is invisible and untouchable; no tenant set sees nothing', async () => {
  const client = await connectClient(db.runtimeUrl)
  await client.query('BEGIN')
  await client.query(app.db.context.statement({ tenantId: aTenant }))
  const seen = await client.query('SELECT tenant_id FROM memberships')
  assert.deepEqual(seen.rows.map(r => r.tenant_id), [aTenant])
  assert.equal((await client.query('SELECT 1 FROM memberships WHERE tenant_id = $1', [bTenant])).rowCount, 0)
  assert.equal((await client.query("UPDATE memberships SET role = 'member' WHERE tenant_id = $1", [bTenant])).rowCount, 0)
  assert.equal((await client.query('DELETE FROM memberships WHERE tenant_id = $1', [bTenant])).rowCount, 0)
  assert.equal((await client.query("UPDATE tenants SET name = 'pwned' WHERE id = $1", [bTenant])).rowCount, 0)
  assert.equal((await client.query('SELECT 1 FROM auth_sessions WHERE tenant_id = $1', [bTenant])).rowCount, 0)
  await assert.rejects(
    client.query("INSERT INTO memberships (tenant_id, user_id, role) VALUES ($1, $2, 'owner')", [bTenant, a.user.id]),
    /row-level security/)
  await client.query('ROLLBACK')

  // Nothing set: every tenant table reads empty (fail closed).
  for (const table of ['tenants', 'memberships', 'auth_sessions']) {
    assert.equal((await client.query(`SELECT 1 FROM ${table}`)).rowCount, 0, table)
  }
  // And B's rows really are there (seen as the superuser).
  const admin = await connectClient(db.adminUrl)
  assert.equal((await admin.query('SELECT 1 FROM memberships WHERE tenant_id = $1', [bTenant])).rowCount, 1)
  assert.equal((await admin.query('SELECT name FROM tenants WHERE id = $1', [bTenant])).rows[0].name, 'Tenant B')
})

test('10,000 requests alternating tenants on a pool of 2, with failures mid-transaction: never a row of another tenant', async () => {
  const callers = [a, b]
  let leaks = 0
  let served = 0
  let failedAsPlanned = 0
  const total = 10_000
  const concurrency = 16
  let next = 0
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < total) {
      const i = next++
      const caller = callers[i % 2]!
      const fail = i % 7 === 0
      const res = await app.inject({ url: `/test/visible-members${fail ? '?fail=1' : ''}`, headers: bearer(caller) })
      if (fail) {
        assert.equal(res.statusCode, 500)
        failedAsPlanned++
        continue
      }
      assert.equal(res.statusCode, 200, res.body)
      const { tenants } = res.json() as { tenants: string[] }
      served++
      if (tenants.length !== 1 || tenants[0] !== caller.tenant!.id) leaks++
    }
  }))
  assert.equal(leaks, 0)
  assert.equal(served + failedAsPlanned, total)
  assert.equal(app.db.pool.totalCount <= 2, true)
})
