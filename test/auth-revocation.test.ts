import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { test } from 'node:test'
import type { SessionEnvelope } from '../services/accounts.js'
import { adminClient, buildTestApp, createTestDatabase, testConfig } from './support/app.js'
import { addMember, bearer, changePassword, login, refresh, sessionStatus, signup, tenantStatus } from './support/actors.js'
import { assertProblem } from './support/assertions.js'

// Two replicas on one database: whatever one revokes, the other refuses on the very next request.
const db = await createTestDatabase()
const config = testConfig(db, { AUTH_RATE_LIMIT_MAX: 10_000 })
const a = await buildTestApp(config)
const b = await buildTestApp(config)
const admin = await adminClient(db)

async function loginAgain (email: string, userAgent = 'lightMyRequest') {
  const res = await login(a, { email }, { 'user-agent': userAgent })
  assert.equal(res.statusCode, 200, res.body)
  return res.json() as SessionEnvelope
}

/** DELETE /api/v1/auth/sessions/:id as `as`. */
const endSession = (id: string, as: SessionEnvelope) =>
  a.inject({ method: 'DELETE', url: `/api/v1/auth/sessions/${id}`, headers: bearer(as) })

test('logout on A: the token fails on B at once, the refresh token too; other sessions live on', async () => {
  const user = await signup(a)
  const other = await loginAgain(user.user.email)
  assert.equal(await tenantStatus(b, user), 200, 'B accepts it first')
  const res = await a.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(user) })
  assert.equal(res.statusCode, 204)
  assert.equal(res.body, '')
  assertProblem(await b.inject({ url: '/api/v1/tenant', headers: bearer(user) }), 401, 'AUTH_INVALID_TOKEN')
  assertProblem(await refresh(b, user.refreshToken), 401, 'AUTH_INVALID_TOKEN')
  assertProblem(await a.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(user) }), 401, 'AUTH_INVALID_TOKEN')
  assert.equal(await tenantStatus(b, other), 200)
  const { rows: [row] } = await admin.query('SELECT revoked_reason FROM auth_sessions WHERE family_id = $1', [user.session.id])
  assert.equal(row.revoked_reason, 'logout')
})

test('logout after refreshes revokes the whole family, spent rows included', async () => {
  const user = await signup(a)
  const next = (await refresh(a, user.refreshToken)).json() as SessionEnvelope
  assert.equal((await b.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(next) })).statusCode, 204)
  assert.equal(await tenantStatus(a, next), 401)
  assertProblem(await refresh(a, user.refreshToken), 401, 'AUTH_INVALID_TOKEN') // within grace, yet no successor to hand out
  const { rows } = await admin.query('SELECT revoked_at FROM auth_sessions WHERE family_id = $1', [user.session.id])
  assert.equal(rows.length, 2)
  assert.ok(rows.every(r => r.revoked_at))
})

test('GET /api/v1/auth/sessions lists live sessions with `current` right; DELETE on A ends that session on B', async () => {
  const user = await signup(a)
  const second = await loginAgain(user.user.email, 'test-agent/1.0')
  const third = await loginAgain(user.user.email)
  await refresh(a, third.refreshToken) // a refreshed session is still one entry
  const list = await b.inject({ url: '/api/v1/auth/sessions', headers: bearer(second) })
  assert.equal(list.statusCode, 200, list.body)
  interface Session { id: string, createdAt: string, lastUsedAt: string, ip: string | null, userAgent: string | null, current: boolean }
  const sessions = list.json().sessions as Session[]
  assert.deepEqual(sessions.map(s => s.id).sort(), [user.session.id, second.session.id, third.session.id].sort())
  assert.deepEqual(sessions.filter(s => s.current).map(s => s.id), [second.session.id])
  for (const s of sessions) {
    for (const key of ['id', 'createdAt', 'lastUsedAt', 'ip', 'userAgent', 'current']) assert.ok(key in s, `${key} in ${JSON.stringify(s)}`)
    assert.ok(!Number.isNaN(Date.parse(s.createdAt)))
    assert.equal(s.ip, '127.0.0.1')
  }
  assert.equal(sessions.find(s => s.current)!.userAgent, 'test-agent/1.0')

  assert.equal((await endSession(third.session.id, second)).statusCode, 204)
  const res = await refresh(b, third.refreshToken)
  assertProblem(res, 401, 'AUTH_INVALID_TOKEN')
  assert.equal(await tenantStatus(b, second), 200)
  const after = (await b.inject({ url: '/api/v1/auth/sessions', headers: bearer(second) })).json().sessions as Array<{ id: string }>
  assert.deepEqual(after.map(s => s.id).sort(), [user.session.id, second.session.id].sort())
  // Deleting the current session is a logout.
  assert.equal((await endSession(second.session.id, second)).statusCode, 204)
  assert.equal(await tenantStatus(b, second), 401)
})

test('another user\'s session id, an unknown id, a revoked one and a non-UUID are all 404 — and nothing is revoked', async () => {
  const alice = await signup(a)
  const bob = await signup(a)
  for (const id of [bob.session.id, randomUUID(), 'not-a-uuid']) {
    assertProblem(await endSession(id, alice), 404, 'NOT_FOUND')
  }
  assert.equal(await tenantStatus(b, bob), 200, 'bob\'s session survives alice\'s attempt')
  const gone = await loginAgain(alice.user.email)
  assert.equal((await endSession(gone.session.id, alice)).statusCode, 204)
  assertProblem(await endSession(gone.session.id, alice), 404, 'NOT_FOUND')
  // Bob's list never shows alice's sessions.
  const list = (await b.inject({ url: '/api/v1/auth/sessions', headers: bearer(bob) })).json().sessions as Array<{ id: string }>
  assert.deepEqual(list.map(s => s.id), [bob.session.id])
})

test('password change on A: every other session of the user fails on B, the current one keeps working', async () => {
  const user = await signup(a)
  const other = await loginAgain(user.user.email)
  // A session in a second tenant of the same user is revoked too.
  const owner2 = await signup(a)
  assert.equal((await addMember(a, owner2, user.user.email)).statusCode, 201)
  const elsewhere = (await login(a, { email: user.user.email, tenant: owner2.tenant!.id })).json() as SessionEnvelope
  const bystander = await signup(a)

  const res = await changePassword(a, user, 'correct horse battery', 'another good password')
  assert.equal(res.statusCode, 204, res.body)
  assert.equal(await tenantStatus(b, other), 401)
  assert.equal(await tenantStatus(b, elsewhere), 401)
  assertProblem(await refresh(b, other.refreshToken), 401, 'AUTH_INVALID_TOKEN')
  assert.equal(await tenantStatus(b, user), 200, 'the session that changed it stays')
  assert.equal(await tenantStatus(b, bystander), 200)
  const { rows } = await admin.query(
    "SELECT count(*)::int AS n FROM auth_sessions WHERE user_id = $1 AND revoked_reason = 'password_changed'", [user.user.id])
  assert.equal(rows[0].n, 2)
})

test('a disabled user: 401 on both replicas, for access and refresh, and no new login', async () => {
  const user = await signup(a)
  assert.equal(await tenantStatus(b, user), 200)
  await admin.query('UPDATE users SET disabled_at = now() WHERE id = $1', [user.user.id])
  for (const app of [a, b]) {
    assertProblem(await app.inject({ url: '/api/v1/tenant', headers: bearer(user) }), 401, 'AUTH_INVALID_TOKEN')
    assertProblem(await app.inject({ url: '/api/v1/auth/sessions', headers: bearer(user) }), 401, 'AUTH_INVALID_TOKEN')
    assertProblem(await refresh(app, user.refreshToken), 401, 'AUTH_INVALID_TOKEN')
  }
  assertProblem(await login(b, { email: user.user.email }), 401, 'AUTH_INVALID_CREDENTIALS')
  // Enabled again: the session was never revoked, so it works again.
  await admin.query('UPDATE users SET disabled_at = NULL WHERE id = $1', [user.user.id])
  assert.equal(await tenantStatus(b, user), 200)
})

test('reuse detected on A: the family is dead on B', async () => {
  const user = await signup(a)
  const next = (await refresh(a, user.refreshToken)).json() as SessionEnvelope
  assert.equal(await tenantStatus(b, next), 200)
  await admin.query(
    "UPDATE auth_sessions SET rotated_at = rotated_at - interval '1 minute' WHERE family_id = $1 AND rotated_at IS NOT NULL",
    [user.session.id])
  assertProblem(await refresh(a, user.refreshToken), 401, 'AUTH_INVALID_TOKEN')
  assertProblem(await b.inject({ url: '/api/v1/tenant', headers: bearer(next) }), 401, 'AUTH_INVALID_TOKEN')
  assertProblem(await refresh(b, next.refreshToken), 401, 'AUTH_INVALID_TOKEN')
})

test('removed from the tenant on A: the member\'s session in it fails on B', async () => {
  const owner = await signup(a)
  const member = await signup(a)
  assert.equal((await addMember(a, owner, member.user.email)).statusCode, 201)
  const inOwners = (await login(a, { email: member.user.email, tenant: owner.tenant!.slug })).json() as SessionEnvelope
  assert.equal(await tenantStatus(b, inOwners), 200)
  const removed = await a.inject({ method: 'DELETE', url: `/api/v1/tenant/members/${member.user.id}`, headers: bearer(owner) })
  assert.equal(removed.statusCode, 204)
  assert.equal(await tenantStatus(b, inOwners), 401)
  assert.equal(await sessionStatus(b, inOwners), 401)
  assertProblem(await refresh(b, inOwners.refreshToken), 401, 'AUTH_INVALID_TOKEN')
  assert.equal(await tenantStatus(b, member), 200, 'their session in their own tenant is untouched')
})

test('revocation racing a refresh of the same session: no successor survives it', async () => {
  // A refresh on A holds the session row while logout (or reuse detection) on B revokes the
  // family: the successor it commits must be revoked too, not live on as an orphan.
  const live = async (familyId: string) =>
    (await admin.query('SELECT count(*)::int AS n FROM auth_sessions WHERE family_id = $1 AND revoked_at IS NULL', [familyId]))
      .rows[0].n as number
  for (let i = 0; i < 15; i++) {
    const user = await signup(a)
    const [renewed, out] = await Promise.all([
      refresh(a, user.refreshToken),
      b.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(user) })
    ])
    assert.ok([200, 401].includes(renewed.statusCode), renewed.body)
    assert.ok([204, 401].includes(out.statusCode), out.body)
    if (out.statusCode === 204) {
      assert.equal(await live(user.session.id), 0, `round ${i}: logout left a live row (refresh answered ${renewed.statusCode})`)
      if (renewed.statusCode === 200) assert.equal(await tenantStatus(b, renewed.json()), 401)
    }
  }
  for (let i = 0; i < 15; i++) {
    const user = await signup(a)
    const head = (await refresh(a, user.refreshToken)).json() as SessionEnvelope
    await admin.query(
      "UPDATE auth_sessions SET rotated_at = rotated_at - interval '1 minute' WHERE family_id = $1 AND rotated_at IS NOT NULL",
      [user.session.id])
    const [legit, replay] = await Promise.all([refresh(a, head.refreshToken), refresh(b, user.refreshToken)])
    assert.equal(replay.statusCode, 401)
    assert.ok([200, 401].includes(legit.statusCode), legit.body)
    assert.equal(await live(user.session.id), 0,
      `round ${i}: reuse detection left a live row (the racing refresh answered ${legit.statusCode})`)
  }
})
