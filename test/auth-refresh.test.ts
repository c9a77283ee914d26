import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { SessionEnvelope } from '../services/accounts.js'
import { adminClient, buildTestApp, createTestDatabase, testConfig } from './support/app.js'
import { addMember, bearer, login, refresh, sha256, signup, tenantStatus } from './support/actors.js'
import { assertProblem } from './support/assertions.js'

const db = await createTestDatabase()
const config = testConfig(db, { AUTH_RATE_LIMIT_MAX: 10_000, DB_MAX_CONNECTIONS: 10 })
const app = await buildTestApp(config)
const admin = await adminClient(db)

interface Row {
  id: string
  parent_id: string | null
  successor_id: string | null
  rotated_at: Date | null
  revoked_at: Date | null
  revoked_reason: string | null
  absolute_expires_at: Date
  idle_expires_at: Date
  last_used_at: Date
}
const family = async (familyId: string) =>
  (await admin.query<Row>('SELECT * FROM auth_sessions WHERE family_id = $1 ORDER BY created_at, rotated_at NULLS LAST', [familyId])).rows

async function refreshed (refreshToken: string) {
  const res = await refresh(app, refreshToken)
  assert.equal(res.statusCode, 200, res.body)
  return res.json() as SessionEnvelope
}

test('refresh: a new pair in the same session; the old access and refresh tokens are spent', async () => {
  const start = await signup(app)
  const next = await refreshed(start.refreshToken)
  assert.notEqual(next.accessToken, start.accessToken)
  assert.notEqual(next.refreshToken, start.refreshToken)
  assert.equal(next.session.id, start.session.id, 'the session id is the family: stable across refreshes')
  assert.deepEqual(next.user, start.user)
  assert.deepEqual(next.tenant, start.tenant)
  assert.equal(next.expiresIn, 900)

  assert.equal(await tenantStatus(app, next), 200)
  assertProblem(await app.inject({ url: '/api/v1/tenant', headers: bearer(start) }), 401, 'AUTH_INVALID_TOKEN')

  const rows = await family(start.session.id)
  assert.equal(rows.length, 2)
  const [first, second] = rows as [Row, Row]
  assert.ok(first.rotated_at)
  assert.equal(first.successor_id, second.id)
  assert.equal(second.parent_id, first.id)
  assert.equal(second.rotated_at, null)
  assert.equal(second.absolute_expires_at.getTime(), first.absolute_expires_at.getTime(), 'rotation never extends the absolute lifetime')
  const { rows: [hashes] } = await admin.query('SELECT access_token_hash, refresh_token_hash FROM auth_sessions WHERE id = $1', [second.id])
  assert.deepEqual(hashes.access_token_hash, sha256(next.accessToken))
  assert.deepEqual(hashes.refresh_token_hash, sha256(next.refreshToken))
  // A chain of refreshes keeps working.
  const third = await refreshed(next.refreshToken)
  assert.equal(await tenantStatus(app, third), 200)
  assert.equal((await family(start.session.id)).length, 3)
})

test('20 concurrent refreshes with one token: exactly one successor, all 200 with the same tokens, no 500', async () => {
  const start = await signup(app)
  const results = await Promise.all(Array.from({ length: 20 }, () => refresh(app, start.refreshToken)))
  assert.deepEqual(results.map(r => r.statusCode), Array(20).fill(200), results.find(r => r.statusCode !== 200)?.body)
  const bodies = results.map(r => r.json() as SessionEnvelope)
  assert.equal(new Set(bodies.map(b => b.refreshToken)).size, 1)
  assert.equal(new Set(bodies.map(b => b.accessToken)).size, 1)
  const rows = await family(start.session.id)
  assert.equal(rows.length, 2, 'one successor, not a branch per request')
  assert.equal(rows.filter(r => r.rotated_at === null && r.revoked_at === null).length, 1)
  assert.equal(await tenantStatus(app, bodies[0]!), 200)
})

test('a replay within the grace window gets the current successor, even two rotations later', async () => {
  const start = await signup(app)
  const second = await refreshed(start.refreshToken)
  const replay = await refreshed(start.refreshToken)
  assert.equal(replay.refreshToken, second.refreshToken)
  assert.equal(replay.accessToken, second.accessToken)
  const third = await refreshed(second.refreshToken)
  const late = await refreshed(start.refreshToken)
  assert.equal(late.refreshToken, third.refreshToken, 'the head of the family, not a spent successor')
  assert.equal((await family(start.session.id)).length, 3, 'no new rows for replays')
  assert.equal(await tenantStatus(app, third), 200)
})

test('a replay after the grace window revokes the whole family: every token of it fails', async () => {
  const start = await signup(app)
  const other = await signup(app) // an unrelated session stays alive
  const second = await refreshed(start.refreshToken)
  // Ten seconds have passed.
  await admin.query(
    "UPDATE auth_sessions SET rotated_at = rotated_at - interval '11 seconds' WHERE family_id = $1 AND rotated_at IS NOT NULL",
    [start.session.id])
  assertProblem(await refresh(app, start.refreshToken), 401, 'AUTH_INVALID_TOKEN')
  const rows = await family(start.session.id)
  assert.ok(rows.every(r => r.revoked_at !== null && r.revoked_reason === 'refresh_token_reused'), JSON.stringify(rows))
  assertProblem(await app.inject({ url: '/api/v1/tenant', headers: bearer(second) }), 401, 'AUTH_INVALID_TOKEN')
  assertProblem(await refresh(app, second.refreshToken), 401, 'AUTH_INVALID_TOKEN')
  assert.equal(await tenantStatus(app, other), 200)
})

test('REFRESH_REUSE_GRACE_S=0: any replay of a spent token is reuse', async () => {
  const strict = await buildTestApp(testConfig(db, { REFRESH_REUSE_GRACE_S: 0, AUTH_RATE_LIMIT_MAX: 10_000 }))
  const start = await signup(strict)
  const second = (await refresh(strict, start.refreshToken)).json() as SessionEnvelope
  assertProblem(await refresh(strict, start.refreshToken), 401, 'AUTH_INVALID_TOKEN')
  assertProblem(await refresh(strict, second.refreshToken), 401, 'AUTH_INVALID_TOKEN')
  assert.equal(await tenantStatus(strict, second), 401)
})

test('a spent token replayed after the old row went idle still revokes the family (the thief kept refreshing)', async () => {
  const start = await signup(app)
  const thief = await refreshed(start.refreshToken)
  // Eight days later: the spent row is past its idle expiry; the thief's head is not.
  await admin.query(`UPDATE auth_sessions SET rotated_at = now() - interval '8 days', idle_expires_at = now() - interval '1 day',
                       created_at = now() - interval '8 days' WHERE id = $1`, [(await family(start.session.id))[0]!.id])
  assertProblem(await refresh(app, start.refreshToken), 401, 'AUTH_INVALID_TOKEN')
  assertProblem(await refresh(app, thief.refreshToken), 401, 'AUTH_INVALID_TOKEN')
  assert.equal(await tenantStatus(app, thief), 401)
})

test('expiry: access token, idle timeout and absolute lifetime each end what they should', async () => {
  // An expired access token fails, but the session refreshes.
  const a = await signup(app)
  await admin.query("UPDATE auth_sessions SET access_expires_at = now() - interval '1 second' WHERE family_id = $1", [a.session.id])
  assertProblem(await app.inject({ url: '/api/v1/tenant', headers: bearer(a) }), 401, 'AUTH_INVALID_TOKEN')
  const renewed = await refreshed(a.refreshToken)
  assert.equal(await tenantStatus(app, renewed), 200)

  // Idle past REFRESH_IDLE_TIMEOUT_S: neither token works.
  const b = await signup(app)
  await admin.query("UPDATE auth_sessions SET idle_expires_at = now() - interval '1 second' WHERE family_id = $1", [b.session.id])
  assertProblem(await app.inject({ url: '/api/v1/tenant', headers: bearer(b) }), 401, 'AUTH_INVALID_TOKEN')
  assertProblem(await refresh(app, b.refreshToken), 401, 'AUTH_INVALID_TOKEN')

  // Past the absolute lifetime: neither token works, however recently used.
  const c = await signup(app)
  await admin.query("UPDATE auth_sessions SET absolute_expires_at = now() - interval '1 second' WHERE family_id = $1", [c.session.id])
  assertProblem(await app.inject({ url: '/api/v1/tenant', headers: bearer(c) }), 401, 'AUTH_INVALID_TOKEN')
  assertProblem(await refresh(app, c.refreshToken), 401, 'AUTH_INVALID_TOKEN')
})

test('defaults: 15 min access, 30 days absolute, 7 days idle', async () => {
  const a = await signup(app)
  const { rows: [row] } = await admin.query(`SELECT extract(epoch FROM access_expires_at - created_at)::int AS access,
      extract(epoch FROM absolute_expires_at - created_at)::int AS absolute, extract(epoch FROM idle_expires_at - created_at)::int AS idle
    FROM auth_sessions WHERE family_id = $1`, [a.session.id])
  assert.deepEqual(row, { access: 900, absolute: 30 * 86400, idle: 7 * 86400 })
})

test(
  'idle extension: using the access token pushes the idle expiry forward (at most once a minute), capped by the absolute one', async () => {
    const a = await signup(app)
    const before = new Date(Date.now() - 2 * 60_000)
    await admin.query("UPDATE auth_sessions SET last_used_at = $2, idle_expires_at = now() + interval '1 hour' WHERE family_id = $1",
      [a.session.id, before])
    assert.equal(await tenantStatus(app, a), 200)
    const [row] = await family(a.session.id)
    assert.ok(row!.last_used_at.getTime() > before.getTime() + 60_000, 'last used moved')
    const extendedBy = row!.idle_expires_at.getTime() - Date.now()
    assert.ok(extendedBy > 6.9 * 86400_000, `idle expiry extended to ~7 days (${extendedBy} ms)`)

    // Used again within the minute: no write.
    await admin.query("UPDATE auth_sessions SET idle_expires_at = now() + interval '1 hour' WHERE family_id = $1", [a.session.id])
    assert.equal(await tenantStatus(app, a), 200)
    assert.ok((await family(a.session.id))[0]!.idle_expires_at.getTime() - Date.now() < 3600_000 + 5000)

    // Never past the absolute expiry.
    await admin.query(
      "UPDATE auth_sessions SET last_used_at = now() - interval '2 minutes', absolute_expires_at = now() + interval '1 day' " +
      'WHERE family_id = $1',
      [a.session.id])
    assert.equal(await tenantStatus(app, a), 200)
    const [capped] = await family(a.session.id)
    assert.equal(capped!.idle_expires_at.getTime(), capped!.absolute_expires_at.getTime())

    // Refreshing extends it too: the new pair starts a fresh idle window.
    const b = await signup(app)
    await admin.query("UPDATE auth_sessions SET idle_expires_at = now() + interval '1 minute' WHERE family_id = $1", [b.session.id])
    await refreshed(b.refreshToken)
    const head = (await family(b.session.id)).find(r => r.rotated_at === null)!
    assert.ok(head.idle_expires_at.getTime() - Date.now() > 6.9 * 86400_000)
  })

test(
  'refresh refuses what it should: unknown, malformed, another user\'s prefix, a revoked session, a disabled user, a removed member',
  async () => {
    const a = await signup(app)
    assertProblem(await refresh(app, 'garbage'), 401, 'AUTH_INVALID_TOKEN')
    assertProblem(await refresh(app, a.refreshToken.slice(0, -1) + (a.refreshToken.endsWith('A') ? 'B' : 'A')), 401, 'AUTH_INVALID_TOKEN')
    const b = await signup(app)
    const forged = b.user.id.replace(/-/g, '') + '.' + a.refreshToken.split('.')[1]
    assertProblem(await refresh(app, forged), 401, 'AUTH_INVALID_TOKEN')
    assertProblem(await refresh(app, a.accessToken), 401, 'AUTH_INVALID_TOKEN')

    assert.equal((await app.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(a) })).statusCode, 204)
    assertProblem(await refresh(app, a.refreshToken), 401, 'AUTH_INVALID_TOKEN')

    await admin.query('UPDATE users SET disabled_at = now() WHERE id = $1', [b.user.id])
    assertProblem(await refresh(app, b.refreshToken), 401, 'AUTH_INVALID_TOKEN')

    const owner = await signup(app)
    const member = await signup(app)
    const add = await addMember(app, owner, member.user.email)
    assert.equal(add.statusCode, 201)
    const inOwners = (await login(app, { email: member.user.email, tenant: owner.tenant!.slug })).json() as SessionEnvelope
    await admin.query('DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2', [owner.tenant!.id, member.user.id])
    assertProblem(await refresh(app, inOwners.refreshToken), 401, 'AUTH_INVALID_TOKEN')
  })
