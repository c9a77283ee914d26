import assert from 'node:assert/strict'
import { randomBytes, randomUUID } from 'node:crypto'
import { test } from 'node:test'
import pg from 'pg'
import { adminClient, buildTestApp, connectClient, createTestDatabase, testConfig } from './support/app.js'
import { bearer, loginOperator, setContract, signup } from './support/actors.js'
import { hashToken, newToken } from '../services/tokens.js'

// What one SQL injection could do over the runtime login: it can send any statement, so the
// role itself must hold only what the code uses, and the row-level security context must be
// something a statement cannot make up (infra/request-context.ts).

const db = await createTestDatabase()
// One pooled connection: the test of a context left at session level reuses it for certain.
const app = await buildTestApp(testConfig(db, { DB_MAX_CONNECTIONS: 1 }))
const a = await signup(app)
const b = await signup(app)
// b's tenant has rows in every kind of tenant table the attack below goes for.
await setContract(app, await loginOperator(app), b.tenant!.id, { recording_mode: true, recording_events_per_minute: 1000 })
const batch = {
  events: [{ id: randomUUID(), recordingId: 'rec-b', type: 'click', occurredAt: new Date().toISOString(), payload: { x: 1 } }]
}
const ingested = await app.inject({ method: 'POST', url: '/api/v1/recordings/events', headers: bearer(b), payload: batch })

const operator = await loginOperator(app)
const runtime = await connectClient(db.runtimeUrl)
const admin = await adminClient(db)

/** Rows of b's tenant the runtime role sees after `setup`, table by table. */
async function visibleOfB (setup: string[]): Promise<Record<string, number>> {
  await runtime.query('BEGIN')
  try {
    for (const statement of setup) await runtime.query(statement)
    const seen: Record<string, number> = {}
    for (const [table, where] of Object.entries({
      tenants: 'id = $1',
      memberships: 'tenant_id = $1',
      auth_sessions: 'tenant_id = $1',
      audit_log: 'tenant_id = $1',
      tenant_operation_log: 'tenant_id = $1',
      recording_events: 'tenant_id = $1',
      operator_audit_events: '$1::uuid IS NOT NULL',
      // The tenant's own reads, owner-side: they trust only a context that verifies.
      'tenant_read_tenant()': 'id = $1',
      'tenant_read_members()': '$1::uuid IS NOT NULL'
    })) {
      seen[table] = (await runtime.query(`SELECT 1 FROM ${table} WHERE ${where}`, [b.tenant!.id])).rowCount!
    }
    return seen
  } finally {
    await runtime.query('ROLLBACK')
  }
}
const nothing = Object.fromEntries(['tenants', 'memberships', 'auth_sessions', 'audit_log', 'tenant_operation_log', 'recording_events',
  'operator_audit_events', 'tenant_read_tenant()', 'tenant_read_members()'].map(table => [table, 0]))
const literal = (s: string) => pg.Client.prototype.escapeLiteral(s)

test('a context the service signed opens its tenant (the control for the attacks below)', async () => {
  assert.equal(ingested.statusCode, 202, ingested.body)
  const seen = await visibleOfB([app.db.context.statement({ tenantId: b.tenant!.id })])
  const { operator_audit_events: operatorRows, ...tenantTables } = seen
  assert.equal(operatorRows, 0, 'a tenant context does not see the operator chain')
  assert.equal(seen['tenant_read_tenant()'], 1, "b's own tenant row and only that")
  for (const [table, n] of Object.entries(tenantTables)) assert.ok(n > 0, `${table}: b's rows are visible in b's context`)
  const operator = await visibleOfB([app.db.context.statement({ operator: true })])
  assert.ok(operator.tenants === 1 && (operator.operator_audit_events ?? 0) > 0, JSON.stringify(operator))
})

test(
  'set_config cannot forge a context: the old settings, a made-up MAC, or a signed context with its tenant swapped open nothing',
  async () => {
    const victim = b.tenant!.id
    const expired = (await admin.query('SELECT app_context_sign($1, NULL, false, -1) AS c', [victim])).rows[0].c
    const attempts: Record<string, string[]> = {
      'the old settings': [
        `SELECT set_config('app.tenant_id', '${victim}', true), set_config('app.user_id', '${b.user.id}', true), ` +
          "set_config('app.operator', 'on', true)"
      ],
      'an operator context with a made-up MAC': [
        `SELECT set_config('app.context', ${literal(`::1/${randomBytes(32).toString('hex')}`)}, true)`
      ],
      "a's own signed context with b's tenant in it": [
        `SELECT set_config('app.context', ${literal(app.db.context.sign({ tenantId: a.tenant!.id }).replace(a.tenant!.id, victim))}, true)`
      ],
      'a context for b signed by the database itself, but expired': [
        `SELECT set_config('app.context', ${literal(expired)}, true)`
      ],
      "a's signed context with the operator flag set": [
        `SELECT set_config('app.context', ${literal(app.db.context.sign({ tenantId: a.tenant!.id }).replace(':0:', ':1:'))}, true)`
      ]
    }
    for (const [name, setup] of Object.entries(attempts)) {
      assert.deepEqual(await visibleOfB(setup), nothing, name)
    }
    const { rows: [helpers] } = await runtime.query(
      `SELECT set_config('app.tenant_id', '${victim}', false), set_config('app.operator', 'on', false),
    app_tenant_id() AS tenant, app_user_id() AS "user", app_is_operator() AS operator`)
    assert.deepEqual({ ...helpers, set_config: undefined }, { set_config: undefined, tenant: null, user: null, operator: false })
    await runtime.query('RESET app.tenant_id; RESET app.operator')
  })

test(
  'the key and the signing function are out of reach; audit rows go only through audit_append, ingest only with a verified context',
  async () => {
    await assert.rejects(runtime.query('SELECT key FROM request_context_key'), /permission denied/)
    await assert.rejects(runtime.query('SELECT app_context_sign($1, NULL, true)', [b.tenant!.id]), /permission denied/)

    // A password hash comes out of auth_credential_attempt only with the service's proof for that
    // very email, client and limits: not for free, not with limits of the caller's choosing.
    const limits = { maxFailuresPerClient: 10, maxFailuresPerAccount: 100 }
    const proof = app.db.context.credentialProof({ email: b.user.email, client: '192.0.2.1', ...limits })
    const attempt = (p: string, max: number) =>
      runtime.query('SELECT password_hash FROM auth_credential_attempt($1, $2, $3, $4, $5)', [p, b.user.email, '192.0.2.1', max, 100])
    await assert.rejects(attempt(`${Math.floor(Date.now() / 1000) + 300}/${'0'.repeat(64)}`, 10), /proof for this attempt/)
    await assert.rejects(attempt(proof, 1_000_000), /proof for this attempt/)
    assert.match((await attempt(proof, 10)).rows[0].password_hash, /^\$argon2id\$/, 'the control: the service\'s own proof works')
    const { rows: [counted] } = await admin.query('SELECT coalesce(sum(failures), 0)::int AS n FROM login_failures')
    assert.equal(counted.n, 1, 'only the proven attempt was counted')

    // In b's own, valid context: still no direct INSERT with a hash of its choosing.
    await runtime.query(`BEGIN; ${app.db.context.statement({ tenantId: b.tenant!.id })}`)
    try {
      await assert.rejects(runtime.query(`INSERT INTO audit_log (tenant_id, seq, occurred_at, actor, action, data, prev_hash, hash)
      VALUES ($1, 999, now(), '{}', 'forged', '{}', repeat('0', 64), repeat('0', 64))`, [b.tenant!.id]), /permission denied/)
    } finally {
      await runtime.query('ROLLBACK')
    }
    // audit_append appends where the caller's context allows, and nowhere else.
    await runtime.query(`BEGIN; ${app.db.context.statement({ tenantId: a.tenant!.id })}`)
    try {
      await assert.rejects(
        runtime.query("SELECT audit_append('audit_log', $1, " +
          "'{\"action\":\"x\",\"actor\":{},\"data\":{},\"target\":null}')", [b.tenant!.id]),
        /row-level security/)
    } finally {
      await runtime.query('ROLLBACK')
    }
    // The ingest takes its tenant from the context it is given, and refuses one that does not verify.
    const events = JSON.stringify([
      { id: randomUUID(), recording_id: 'forged', type: 'x', occurred_at: new Date().toISOString(), payload: {} }
    ])
    await assert.rejects(runtime.query('SELECT recording_events_ingest($1, $2)', [`${b.tenant!.id}::0/${'0'.repeat(64)}`, events]),
      /verified tenant context/)
    const { rows: [stored] } = await admin.query("SELECT count(*)::int AS n FROM recording_events WHERE recording_id = 'forged'")
    assert.equal(stored.n, 0)
  })

test('catalog: the runtime role holds exactly the table, column and function privileges the code uses', async () => {
  const { rows: tables } = await admin.query<{ name: string, privileges: string[] }>(`
    SELECT c.relname AS name, array_agg(DISTINCT g.privilege_type ORDER BY g.privilege_type) AS privileges
      FROM pg_class c, aclexplode(c.relacl) g
     WHERE c.relnamespace = 'public'::regnamespace AND g.grantee IN ('govula_runtime'::regrole, 0)
     GROUP BY c.relname ORDER BY c.relname`)
  assert.deepEqual(Object.fromEntries(tables.map(t => [t.name, t.privileges.join(',')])), {
    audit_checkpoints: 'INSERT,SELECT',
    audit_log: 'SELECT',
    auth_sessions: 'DELETE,INSERT,SELECT',
    features: 'SELECT',
    job_runs: 'INSERT,SELECT,UPDATE',
    memberships: 'DELETE,INSERT,SELECT,UPDATE',
    operator_audit_events: 'SELECT',
    plan_features: 'SELECT',
    plans: 'SELECT',
    recording_events: 'DELETE,INSERT,SELECT',
    recording_summaries: 'SELECT',
    schema_migrations: 'SELECT',
    // Writes here pass row-level security in operator scope only.
    tenant_contracts: 'DELETE,INSERT,SELECT,UPDATE',
    tenant_operation_log: 'SELECT',
    tenants: 'INSERT,SELECT,UPDATE'
  })

  const { rows: columns } = await admin.query<{ name: string, privileges: string[] }>(`
    SELECT c.relname || '.' || a.attname AS name, array_agg(DISTINCT g.privilege_type ORDER BY g.privilege_type) AS privileges
      FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid, aclexplode(a.attacl) g
     WHERE c.relnamespace = 'public'::regnamespace AND g.grantee IN ('govula_runtime'::regrole, 0)
     GROUP BY 1 ORDER BY 1`)
  assert.deepEqual(Object.fromEntries(columns.map(c => [c.name, c.privileges.join(',')])), {
    // A session row changes only at its end: never its token hashes, owner, tenant or expiry.
    'auth_sessions.grace_payload': 'UPDATE',
    'auth_sessions.revoked_at': 'UPDATE',
    'auth_sessions.revoked_reason': 'UPDATE',
    'auth_sessions.rotated_at': 'UPDATE',
    'auth_sessions.successor_id': 'UPDATE',
    // No password hash, no writes: credentials go through the auth_* functions.
    'users.disabled_at': 'SELECT',
    'users.email': 'SELECT',
    'users.id': 'SELECT',
    'users.is_operator': 'SELECT'
  })

  const { rows: functions } = await admin.query<{ name: string, definer: boolean }>(`
    SELECT p.oid::regprocedure::text AS name, p.prosecdef AS definer FROM pg_proc p
     WHERE p.pronamespace = 'public'::regnamespace AND has_function_privilege('govula_runtime', p.oid, 'EXECUTE')
     ORDER BY 1`)
  assert.deepEqual(Object.fromEntries(functions.map(f => [f.name, f.definer ? 'definer' : 'invoker'])), {
    'app_is_operator()': 'definer',
    'app_tenant_id()': 'definer',
    'app_tenant_user_ids()': 'definer',
    'app_user_id()': 'definer',
    'audit_append(text,uuid,text)': 'definer',
    'auth_create_user(uuid,text,text)': 'definer',
    'auth_credential_attempt(text,text,text,integer,integer)': 'definer',
    'auth_credential_verified(text)': 'definer',
    'auth_resolve_access(uuid,bytea,interval)': 'definer',
    'auth_store_password_hash(text,boolean)': 'definer',
    'auth_user_by_email(text)': 'definer',
    'recording_events_ingest(text,json)': 'invoker',
    'tenant_read_members()': 'definer',
    'tenant_read_tenant()': 'definer'
  })
  // Every definer function pins its search_path: a temporary object cannot stand in for a table.
  const { rows: unpinned } = await admin.query(`
    SELECT p.proname FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace AND p.prosecdef
       AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) s WHERE s LIKE 'search_path=%')`)
  assert.deepEqual(unpinned, [])

  // The login is a member of the runtime group and of nothing else.
  const { rows: memberOf } = await admin.query(`
    SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid
     WHERE m.member = 'govula_app'::regrole`)
  assert.deepEqual(memberOf.map(r => r.rolname), ['govula_runtime'])
})

test(
  "in its own tenant's context a statement cannot mint a session, take one over, change its plan or contract, or a job's lease",
  async () => {
    const inA = app.db.context.statement({ tenantId: a.tenant!.id })
    const attempt = async (sql: string, params: unknown[] = []) => {
      await runtime.query(`BEGIN; ${inA}`)
      try {
        return await runtime.query(sql, params).then(r => `ok ${r.rowCount}`, (err: Error) => err.message)
      } finally {
        await runtime.query('ROLLBACK')
      }
    }
    // A colleague (or an operator made a member) with a session of the attacker's choosing.
    const token = newToken(operator.user.id)
    const INSERT_SESSION = 'INSERT INTO auth_sessions (family_id, user_id, tenant_id, access_token_hash, refresh_token_hash, ' +
      'access_expires_at, idle_expires_at, absolute_expires_at) ' +
      "VALUES (gen_random_uuid(), $1, $2, $3, $4, now() + interval '1 day', now() + interval '1 day', now() + interval '1 day')"
    assert.match(await attempt(INSERT_SESSION,
      [operator.user.id, a.tenant!.id, hashToken(token), hashToken(newToken(operator.user.id))]), /row-level security/)
    assert.match(await attempt('UPDATE auth_sessions SET access_token_hash = $2 WHERE tenant_id = $1', [a.tenant!.id, hashToken(token)]),
      /permission denied/)
    assert.equal(await attempt("UPDATE tenants SET plan = 'enterprise', lifecycle = 'active' WHERE id = $1", [a.tenant!.id]), 'ok 0')
    assert.match(await attempt(
      'INSERT INTO tenant_contracts (tenant_id, features, starts_at, ends_at) ' +
      'VALUES ($1, \'{"recording_mode": true}\', now(), now() + interval \'1 day\')', [a.tenant!.id]), /row-level security/)
    assert.match(await attempt('INSERT INTO job_runs (job, slot, trigger, instance) ' +
      "VALUES ('purge-sessions', now() + interval '1 day', 'cron', 'x')"), /row-level security/)
    assert.equal(await attempt("UPDATE job_runs SET outcome = 'succeeded'"), 'ok 0')
    // Revoking a colleague's session stays possible (member removal does it in tenant scope).
    assert.equal(await attempt(
      "UPDATE auth_sessions SET revoked_at = now(), revoked_reason = 'membership_removed' WHERE tenant_id = $1", [a.tenant!.id]), 'ok 1')

    // Even a session row that only the owner could write — an operator's, in a tenant — is no
    // operator session: operator routes need a session in no tenant.
    const admitted = newToken(operator.user.id)
    await admin.query("INSERT INTO memberships (tenant_id, user_id, role) VALUES ($1, $2, 'owner')", [a.tenant!.id, operator.user.id])
    await admin.query(INSERT_SESSION, [operator.user.id, a.tenant!.id, hashToken(admitted), hashToken(newToken(operator.user.id))])
    const res = await app.inject({ url: '/api/v1/operator/tenants', headers: bearer({ accessToken: admitted }) })
    assert.equal(res.statusCode, 403, res.body)
    assert.equal((await app.inject({ url: '/api/v1/operator/tenants', headers: bearer(operator) })).statusCode, 200)
  })

test('a context left at session level on a pooled connection does not carry into a later transaction', async () => {
  const pooled = await app.db.pool.connect()
  try {
    await pooled.query(`SELECT set_config('app.context', ${literal(app.db.context.sign({ tenantId: a.tenant!.id }))}, false)`)
  } finally {
    pooled.release()
  }
  const seen = await app.db.withTransaction(c => c.query('SELECT app_tenant_id() AS t'))
  assert.equal(seen.rows[0].t, null)
})

test("the runtime role cannot read its other connections' statements (token hashes, signed contexts) in pg_stat_activity", async () => {
  const other = await connectClient(db.runtimeUrl)
  const pid = (await other.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid
  const marker = `marker-${randomBytes(6).toString('hex')}`
  const running = other.query(`SELECT pg_sleep(0.5), '${marker}' AS m`)
  try {
    const seen = await runtime.query<{ query: string, state: string }>(
      "SELECT coalesce(query, '') AS query, coalesce(state, '') AS state FROM pg_stat_activity WHERE pid = $1", [pid])
    assert.equal(seen.rowCount, 1, 'the connection itself is listed (replicas are counted by name)')
    assert.doesNotMatch(seen.rows[0]!.query, new RegExp(marker))
    assert.equal(seen.rows[0]!.state, 'disabled')
  } finally {
    await running
  }
  const health = (await app.inject('/api/v1/health')).json() as { checks: Array<{ name: string, ok: boolean }> }
  assert.deepEqual(health.checks.find(c => c.name === 'statement-privacy')?.ok, true)
})
