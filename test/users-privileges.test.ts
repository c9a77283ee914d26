import assert from 'node:assert/strict'
import { test } from 'node:test'
import { adminClient, buildTestApp, connectClient, createTestDatabase, testConfig } from './support/app.js'
import { addMember, bearer, signup } from './support/actors.js'

const db = await createTestDatabase()
const admin = await adminClient(db)
const app = await buildTestApp(testConfig(db))
const alice = await signup(app)
const bob = await signup(app)

const expectedColumns = {
  id: ['SELECT'],
  email: ['SELECT'],
  password_hash: [],
  is_operator: ['SELECT'],
  disabled_at: ['SELECT'],
  created_at: [],
  password_changed_at: []
}

const CREDENTIAL_FUNCTIONS = [
  'auth_create_user', 'auth_credential_attempt', 'auth_credential_verified', 'auth_store_password_hash', 'auth_user_by_email'
]

test(
  'catalog: users has RLS enabled and forced; the runtime role may SELECT id, email, is_operator, disabled_at and nothing else',
  async () => {
    const { rows: [rel] } = await admin.query(
      "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'public.users'::regclass")
    assert.deepEqual(rel, { relrowsecurity: true, relforcerowsecurity: true })
    const { rows } = await admin.query<{ attname: string, runtime: string[] }>(`
    SELECT a.attname,
           array(SELECT p FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'REFERENCES']) p
                 WHERE has_column_privilege('govula_runtime', a.attrelid, a.attnum, p)) AS runtime
      FROM pg_attribute a WHERE a.attrelid = 'public.users'::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`)
    assert.deepEqual(Object.fromEntries(rows.map(r => [r.attname, r.runtime])), expectedColumns)
    const { rows: [table] } = await admin.query(`
    SELECT array(SELECT p FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p
                 WHERE has_table_privilege('govula_runtime', 'public.users', p)) AS users,
           array(SELECT p FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p
                 WHERE has_table_privilege('govula_runtime', 'public.login_failures', p)) AS failures`)
    assert.deepEqual(table, { users: [], failures: [] }, 'no table-wide privilege on users, none at all on login_failures')
  })

test(
  'catalog: the credential functions are SECURITY DEFINER with a fixed search_path, executable by the runtime role and not by PUBLIC',
  async () => {
    interface Fn { proname: string, prosecdef: boolean, proconfig: string[] | null, runtime: boolean, public: boolean }
    const { rows } = await admin.query<Fn>(`
    SELECT p.proname, p.prosecdef, p.proconfig,
           has_function_privilege('govula_runtime', p.oid, 'EXECUTE') AS runtime,
           coalesce(p.proacl IS NULL OR EXISTS (
             SELECT 1 FROM aclexplode(p.proacl) x WHERE x.grantee = 0 AND x.privilege_type = 'EXECUTE'), true) AS public
      FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace AND p.proname = ANY($1) ORDER BY p.proname`, [CREDENTIAL_FUNCTIONS])
    assert.deepEqual(rows.map(r => r.proname), CREDENTIAL_FUNCTIONS)
    for (const r of rows) {
      assert.deepEqual([r.prosecdef, r.proconfig, r.runtime, r.public],
        [true, ['search_path=pg_catalog, public, pg_temp'], true, false], r.proname)
    }
  })

test('as the runtime role: no operator flag to set, no hash to read or write, no account to create directly', async () => {
  const client = await connectClient(db.runtimeUrl)
  await assert.rejects(client.query('UPDATE users SET is_operator = true WHERE id = $1', [alice.user.id]), /permission denied/)
  await assert.rejects(client.query('SELECT password_hash FROM users'), /permission denied/)
  await assert.rejects(client.query('SELECT * FROM users'), /permission denied/)
  await assert.rejects(client.query("UPDATE users SET password_hash = 'x' WHERE id = $1", [alice.user.id]), /permission denied/)
  await assert.rejects(client.query("INSERT INTO users (email, password_hash, is_operator) VALUES ('evil@example.test', 'x', true)"),
    /permission denied/)
  await assert.rejects(client.query('DELETE FROM users'), /permission denied/)
  await assert.rejects(client.query('SELECT * FROM login_failures'), /permission denied/)
  // The functions that store a hash or give back failures act only for a verified user context.
  await assert.rejects(client.query("SELECT auth_store_password_hash('$argon2id$v=19$m=19456,t=2,p=1$forged', true)"),
    /verified user context/)
  await assert.rejects(client.query("SELECT auth_credential_verified('127.0.0.1')"), /verified user context/)
  await assert.rejects(client.query('SELECT * FROM auth_user_by_email($1)', [alice.user.email]), /tenant context/)
  // A forged context setting is no context (the helpers believe only a signed one).
  await client.query('BEGIN')
  await client.query(
    "SELECT set_config('app.user_id', $1, true), set_config('app.tenant_id', $2, true), set_config('app.operator', 'on', true)",
    [alice.user.id, alice.tenant!.id])
  await assert.rejects(client.query("SELECT auth_store_password_hash('$argon2id$v=19$m=19456,t=2,p=1$forged', true)"),
    /verified user context/)
  await client.query('ROLLBACK')
  const { rows: [{ n }] } = await client.query('SELECT count(*)::int AS n FROM users')
  assert.equal(n, 0, 'no context sees no users')
  const { rows: [flags] } = await admin.query(
    'SELECT count(*) FILTER (WHERE is_operator)::int AS operators FROM users WHERE id = ANY($1)', [[alice.user.id, bob.user.id]])
  assert.equal(flags.operators, 0)
})

test(
  'through HTTP: adding a member by email and the members list work under the users policy; another tenant\'s users stay out', async () => {
    const added = await addMember(app, alice, bob.user.email)
    assert.equal(added.statusCode, 201, added.body)
    type Members = { members?: Array<{ email: string }> } | Array<{ email: string }>
    const members = (await app.inject({ url: '/api/v1/tenant/members', headers: bearer(alice) })).json() as Members
    const list = Array.isArray(members) ? members : members.members ?? []
    assert.deepEqual(list.map(m => m.email).sort(), [alice.user.email, bob.user.email].sort())
    const lone = await signup(app)
    const own = (await app.inject({ url: '/api/v1/tenant/members', headers: bearer(lone) })).json() as Members
    assert.deepEqual((Array.isArray(own) ? own : own.members ?? []).map(m => m.email), [lone.user.email])
  })
