// The auth lookup of a tenant GET opens the request's transaction in one round trip and the
// handler reads in it (plugins/auth.ts). These tests hold that to its promises: fewer round
// trips, the tenant context right, nothing left open, and no route that takes a second
// pooled connection while the first is held (on a pool of one, that would hang).
import assert from 'node:assert/strict'
import { test } from 'node:test'
import pg from 'pg'
import { adminClient, buildTestApp, createTestDatabase, testConfig, waitFor } from './support/app.js'
import { addMember, bearer, loginOperator, signup } from './support/actors.js'

const db = await createTestDatabase()
const admin = await adminClient(db)

/** The statements the app's clients send while `fn` runs, and what each one answered. */
async function statements<T> (fn: () => Promise<T>): Promise<{ result: T, sent: string[], answers: unknown[] }> {
  const sent: string[] = []
  const answers: unknown[] = []
  const original = pg.Client.prototype.query
  pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
    const q = args[0] as string | { text: string }
    sent.push(typeof q === 'string' ? q : q.text)
    const answer = (original as (...a: unknown[]) => unknown).apply(this, args)
    if (answer instanceof Promise) answer.then(r => answers.push(r), () => {})
    return answer
  } as typeof original
  try {
    return { result: await fn(), sent, answers }
  } finally {
    pg.Client.prototype.query = original
  }
}

/** Transactions of the runtime role left open on the test database. */
async function openTransactions () {
  const { rows: [row] } = await admin.query('SELECT count(*)::int AS n FROM pg_stat_activity ' +
    "WHERE datname = current_database() AND usename = 'govula_app' AND state LIKE 'idle in transaction%'")
  return row.n as number
}

/** The token with a wrong secret: well formed, and naming the same (real) user. */
const forge = (token: string) => token.slice(0, -4) + (token.endsWith('AAAA') ? 'BBBB' : 'AAAA')

/** Tenant ids a statement found, the one-round-trip read's results being BEGIN, lookup, read, COMMIT. */
const tenantsFound = (answer: unknown) => ((answer as pg.QueryResult[])[2]!.rows as Array<{ tenantId: string }>).map(r => r.tenantId).sort()

test('a tenant GET whose read is one statement is one round trip: BEGIN, the lookup, the read, COMMIT', async () => {
  const app = await buildTestApp(testConfig(db))
  const t = await signup(app)
  await app.inject({ url: '/api/v1/tenant/members', headers: bearer(t) }) // warm the entitlement cache
  for (const [url, check] of [
    ['/api/v1/tenant/members',
      (body: { members: Array<{ email: string }> }) => assert.deepEqual(body.members.map(m => m.email), [t.user.email])],
    ['/api/v1/tenant', (body: { id: string }) => assert.equal(body.id, t.tenant!.id)]
  ] as const) {
    const { result: res, sent } = await statements(() => app.inject({ url, headers: bearer(t) }))
    assert.equal(res.statusCode, 200, res.body)
    check(res.json())
    assert.equal(sent.length, 1, sent.join('\n'))
    assert.match(sent[0]!, /^BEGIN; SELECT \* FROM auth_resolve_access\(.*\); SELECT .* FROM tenant_read_\w+\(\).*; COMMIT$/)
  }
  // HEAD shares the route but not the shortcut: the read runs in its own transaction.
  const head = await app.inject({ method: 'HEAD', url: '/api/v1/tenant/members', headers: bearer(t) })
  assert.equal(head.statusCode, 200)
  await waitFor(() => app.pg.pool.idleCount === app.pg.pool.totalCount, { what: 'every connection back in the pool' })
})

test('any other tenant GET is three round trips: BEGIN with the auth lookup, the read, COMMIT', async () => {
  const app = await buildTestApp(testConfig(db))
  const t = await signup(app)
  await app.inject({ url: '/api/v1/recordings', headers: bearer(t) }) // warm the entitlement cache
  const { result: res, sent } = await statements(() => app.inject({ url: '/api/v1/recordings', headers: bearer(t) }))
  assert.equal(res.statusCode, 200, res.body)
  assert.equal(sent.length, 3, sent.join('\n'))
  assert.match(sent[0]!, /^BEGIN; SELECT \* FROM auth_resolve_access\('[^;]*\)$/)
  assert.match(sent[1]!, /FROM recording/)
  assert.equal(sent[2], 'COMMIT')
  // A body-carrying request holds no connection while the body arrives: its lookup is a
  // statement of its own.
  const { sent: post } = await statements(() =>
    app.inject({ method: 'POST', url: '/api/v1/entitlements/check', headers: bearer(t), payload: { features: ['seats'] } }))
  assert.match(post[0]!, /^SELECT \* FROM auth_resolve_access\(\$1/)
})

test(
  'the one-round-trip read: a bad, revoked or tenantless token reads nothing and gets its 4xx; each session reads its own tenant',
  async () => {
    const app = await buildTestApp(testConfig(db))
    const a = await signup(app)
    const b = await signup(app)
    // A well-formed token of a real user with a wrong secret: the lookup finds no session, so no
    // tenant is set and the read in the same round trip finds nothing to return.
    const forged = forge(a.accessToken)
    const { result: bad, sent } = await statements(() => app.inject({ url: '/api/v1/tenant/members', headers: bearer(forged) }))
    assert.equal(bad.statusCode, 401, bad.body)
    assert.equal(bad.json().code, 'AUTH_INVALID_TOKEN')
    assert.doesNotMatch(bad.body, new RegExp(a.user.email))
    assert.equal(sent.length, 1, 'the read traveled with the lookup')

    // An operator session is in no tenant: 403, and the read found no tenant either.
    const operator = await loginOperator(app)
    const op = await app.inject({ url: '/api/v1/tenant', headers: bearer(operator) })
    assert.equal(op.statusCode, 403, op.body)
    assert.equal(op.json().code, 'TENANT_FORBIDDEN')

    // Concurrent reads by two tenants each see their own.
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => {
      const t = i % 2 ? a : b
      return app.inject({ url: '/api/v1/tenant/members', headers: bearer(t) }).then(r => ({ t, r }))
    }))
    for (const { t, r } of results) assert.deepEqual(r.json().members.map((m: { email: string }) => m.email), [t.user.email])

    // A revoked session: 401 on the very next request.
    const logout = await app.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(a) })
    assert.equal(logout.statusCode, 204, logout.body)
    assert.equal((await app.inject({ url: '/api/v1/tenant/members', headers: bearer(a) })).statusCode, 401)
    assert.equal(await openTransactions(), 0, 'nothing left open')
  })

test('on a pool of one connection, every tenant GET route answers with cold caches (no second checkout while one is held)', async () => {
  const app = await buildTestApp(testConfig(db, { DB_MAX_CONNECTIONS: 1, DB_CONNECTION_TIMEOUT: 2000, ENTITLEMENT_CACHE_TTL_MS: 0 }))
  const operator = await loginOperator(app)
  const t = await signup(app)
  const pro = await app.inject({
    method: 'PUT', url: `/api/v1/operator/tenants/${t.tenant!.id}/plan`, headers: bearer(operator), payload: { plan: 'enterprise' }
  })
  assert.equal(pro.statusCode, 200, pro.body)
  const routes = [
    '/api/v1/tenant', '/api/v1/tenant/members', '/api/v1/entitlements', '/api/v1/entitlements/check?feature=seats',
    '/api/v1/audit', '/api/v1/audit/verify', '/api/v1/audit/checkpoint',
    '/api/v1/recordings', '/api/v1/recordings/none/events'
  ]
  for (const url of routes) {
    const res = await app.inject({ url, headers: bearer(t) })
    assert.ok([200, 404].includes(res.statusCode), `${url}: ${res.statusCode} ${res.body}`)
  }
  // Nothing was left open or checked out (the COMMIT of a request nothing ran in is sent
  // after its response, so poll).
  await waitFor(() => app.pg.pool.idleCount === app.pg.pool.totalCount, { what: 'every connection back in the pool' })
})

test('refusals, validation errors and answers from the cache end the held transaction; the tenant context is the session\'s', async () => {
  const app = await buildTestApp(testConfig(db, { DB_MAX_CONNECTIONS: 1, DB_CONNECTION_TIMEOUT: 2000 }))
  const a = await signup(app)
  const b = await signup(app)
  // A role refusal after the lookup, a cached entitlement answer, a 404 from validation:
  assert.equal((await app.inject({ url: '/api/v1/audit', headers: bearer(a) })).statusCode, 403)
  for (let i = 0; i < 3; i++) {
    assert.equal((await app.inject({ url: '/api/v1/entitlements/check?feature=seats', headers: bearer(a) })).statusCode, 200)
  }
  assert.equal((await app.inject({ url: '/api/v1/entitlements/check?feature=nope', headers: bearer(a) })).statusCode, 400)
  await waitFor(() => app.pg.pool.idleCount === app.pg.pool.totalCount, { what: 'every connection back in the pool' })
  // Each session reads its own tenant through the joined transaction, never the other's.
  const [ra, rb] = await Promise.all([a, b].map(t => app.inject({ url: '/api/v1/tenant', headers: bearer(t) })))
  assert.equal(ra!.json().id, a.tenant!.id)
  assert.equal(rb!.json().id, b.tenant!.id)
  assert.equal(await openTransactions(), 0)
})

test(
  'the one-round-trip read is scoped to the tenant: a forged token of a real user sees nothing, a user of 2 tenants sees the session\'s',
  async () => {
    // A read that leans on row-level security alone (it names app_tenant_id() only to pass the
    // route check): whatever it finds, the transaction's settings let it find.
    const RLS_ALONE = 'SELECT DISTINCT tenant_id::text AS "tenantId" FROM memberships ' +
      'WHERE app_tenant_id() IS NULL OR tenant_id IS NOT NULL'
    const app = await buildTestApp(testConfig(db), {
      setup: (app) => { app.get('/probe/memberships', { config: { tenantRead: RLS_ALONE } }, async (request) => request.tenantRead!.rows) }
    })
    const a = await signup(app)
    const b = await signup(app)
    // a's user is also a member of b's tenant; a's session acts in a's.
    const added = await addMember(app, b, a.user.email)
    assert.equal(added.statusCode, 201, added.body)

    const { result: own, answers } = await statements(() => app.inject({ url: '/probe/memberships', headers: bearer(a) }))
    assert.equal(own.statusCode, 200, own.body)
    assert.deepEqual(own.json().map((r: { tenantId: string }) => r.tenantId), [a.tenant!.id], 'the session\'s tenant only')
    assert.deepEqual(tenantsFound(answers[0]), [a.tenant!.id])

    // The token's user id is a's, its secret wrong: the lookup sets nothing the read may use.
    const forged = forge(a.accessToken)
    const { result: bad, answers: badAnswers } = await statements(() =>
      app.inject({ url: '/probe/memberships', headers: bearer(forged) }))
    assert.equal(bad.statusCode, 401, bad.body)
    assert.deepEqual(tenantsFound(badAnswers[0]), [], 'the read found no rows, not just an answer that hid them')
  })

test('a tenantRead that could carry request data or skip the tenant is refused when the route is declared', async () => {
  const reads = ['SELECT * FROM memberships WHERE tenant_id = $1', 'SELECT * FROM memberships',
    'SELECT 1 WHERE app_tenant_id() IS NOT NULL; SELECT * FROM users']
  for (const tenantRead of reads) {
    await assert.rejects(buildTestApp(testConfig(db), {
      setup: (app) => { app.get('/probe/bad', { config: { tenantRead } }, async () => ({})) }
    }), /a tenantRead is one constant statement taking its tenant from the context/, tenantRead)
  }
})

test(
  'the one-round-trip read stalled after the lookup: 503 at the statement or client timeout; the pool of one serves on, nothing left open',
  async () => {
    for (const [what, timeouts] of [
      ['the statement timeout (Postgres ends it; ROLLBACK)', { DB_STATEMENT_TIMEOUT: 300 }],
      ['the client-side timeout (the connection is destroyed)', { DB_STATEMENT_TIMEOUT: 10_000, DB_QUERY_TIMEOUT: 300 }]
    ] as const) {
      const app = await buildTestApp(testConfig(db, { DB_MAX_CONNECTIONS: 1, DB_CONNECTION_TIMEOUT: 2000, ...timeouts }))
      const t = await signup(app)
      assert.equal((await app.inject({ url: '/api/v1/tenant', headers: bearer(t) })).statusCode, 200) // warm the entitlement cache
      // The lookup never reads `tenants`; GET /api/v1/tenant's read does, so it stalls after the lookup.
      const locker = new pg.Client({ connectionString: db.adminUrl })
      await locker.connect()
      try {
        await locker.query('BEGIN; LOCK TABLE tenants IN ACCESS EXCLUSIVE MODE')
        const stalled = await app.inject({ url: '/api/v1/tenant', headers: bearer(t) })
        assert.equal(stalled.statusCode, 503, `${what}: ${stalled.body}`)
        assert.equal(stalled.json().code, 'SERVICE_UNAVAILABLE')
        // The one connection was rolled back or replaced, not handed on with the stalled batch.
        const other = await app.inject({ url: '/api/v1/tenant/members', headers: bearer(t) })
        assert.equal(other.statusCode, 200, `${what}: ${other.body}`)
      } finally {
        await locker.query('COMMIT')
        await locker.end()
      }
      const again = await app.inject({ url: '/api/v1/tenant', headers: bearer(t) })
      assert.equal(again.statusCode, 200, `${what}: ${again.body}`)
      assert.equal(again.json().id, t.tenant!.id)
      await waitFor(async () => await openTransactions() === 0, { what: `${what}: no transaction left open` })
    }
  })

test(
  'cold entitlement reads under load: requests that hold a connection never wait on one that needs another (a pool of three)', async () => {
    // Every request misses the cache (TTL 0). The one-round-trip reads hold no connection when
    // they check the tenant's limit, so their reads may be shared; the held-transaction GETs read
    // in their own. If those joined a shared read needing a fourth checkout, they would hold the
    // pool while waiting for it, and answer 503 once the checkout timed out.
    const app = await buildTestApp(testConfig(db, { DB_MAX_CONNECTIONS: 3, DB_CONNECTION_TIMEOUT: 2000, ENTITLEMENT_CACHE_TTL_MS: 0 }))
    const t = await signup(app)
    const codes = await Promise.all(Array.from({ length: 30 }, (_, i) =>
      app.inject({ url: i % 2 ? '/api/v1/recordings' : '/api/v1/tenant', headers: bearer(t) }).then(r => r.statusCode)))
    assert.deepEqual(codes.filter(c => c !== 200), [], 'every request answered 200')
    await waitFor(() => app.pg.pool.idleCount === app.pg.pool.totalCount, { what: 'every connection back in the pool' })
  })

test('clients that go away mid-request leave no connection checked out', async () => {
  const app = await buildTestApp(testConfig(db, { DB_MAX_CONNECTIONS: 3 }))
  const t = await signup(app)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  const { connect } = await import('node:net')
  // 60 GETs, each socket destroyed right after its request is written: many are dropped while
  // the auth lookup's round trip is in flight, the case onResponse never sees.
  await Promise.all(Array.from({ length: 60 }, (_, i) => new Promise<void>((resolve) => {
    const socket = connect(port, '127.0.0.1', () => {
      // Both kinds of tenant GET: a held transaction (recordings) and the one-round-trip read (members).
      const url = i % 2 ? '/api/v1/recordings' : '/api/v1/tenant/members'
      socket.write(`GET ${url} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${t.accessToken}\r\n\r\n`)
      setTimeout(() => { socket.destroy(); resolve() }, i % 4) // a spread of moments to go away
    })
    socket.on('error', () => resolve())
  })))
  await waitFor(() => app.pg.pool.idleCount === app.pg.pool.totalCount && app.pg.pool.waitingCount === 0,
    { what: 'every connection back in the pool' })
  // And the service still answers on its small pool.
  const res = await fetch(`http://127.0.0.1:${port}/api/v1/tenant/members`, { headers: bearer(t) })
  assert.equal(res.status, 200)
})
