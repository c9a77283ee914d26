import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { SessionEnvelope } from '../services/accounts.js'
import { adminClient, buildTestApp, createTestDatabase, testConfig } from './support/app.js'
import { bearer, login, sessionStatus, signup } from './support/actors.js'
import { assertProblem } from './support/assertions.js'

const db = await createTestDatabase()
const admin = await adminClient(db)
// MAX_SESSIONS_PER_USER at its default (50); limits that would refuse 100 logins lifted.
const app = await buildTestApp(testConfig(db, { AUTH_RATE_LIMIT_MAX: 10_000, LOGIN_MAX_FAILURES_PER_CLIENT: 10_000 }))

interface Entry { id: string, createdAt: string, current: boolean }
interface Page { sessions: Entry[], nextCursor: string | null }

const listPage = async (token: SessionEnvelope, query = '') => {
  const res = await app.inject({ url: `/api/v1/auth/sessions${query}`, headers: bearer(token) })
  assert.equal(res.statusCode, 200, res.body)
  return res.json() as Page
}
const liveFamilies = async (userId: string) => (await admin.query(
  `SELECT count(DISTINCT family_id)::int AS n FROM auth_sessions
    WHERE user_id = $1 AND revoked_at IS NULL AND rotated_at IS NULL
      AND absolute_expires_at > now() AND idle_expires_at > now()`, [userId])).rows[0].n as number

const user = await signup(app)
const logins: SessionEnvelope[] = []
for (let i = 0; i < 101; i++) {
  const res = await login(app, { email: user.user.email })
  assert.equal(res.statusCode, 200, res.body)
  logins.push(res.json() as SessionEnvelope)
}
const newest = logins.at(-1)!

test(
  '101 logins (after sign-up) leave MAX_SESSIONS_PER_USER live families: the oldest are revoked (session_limit) and their tokens 401',
  async () => {
    assert.equal(await liveFamilies(user.user.id), 50)
    // Sign-up's session and the first 51 logins' are the 52 oldest of 102.
    for (const old of [user, logins[0]!, logins[50]!]) {
      assertProblem(await app.inject({ url: '/api/v1/auth/sessions', headers: bearer(old) }), 401, 'AUTH_INVALID_TOKEN')
      const refreshed = await app.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refreshToken: old.refreshToken } })
      assertProblem(refreshed, 401, 'AUTH_INVALID_TOKEN')
    }
    const { rows } = await admin.query(
      'SELECT DISTINCT revoked_reason FROM auth_sessions WHERE user_id = $1 AND revoked_at IS NOT NULL', [user.user.id])
    assert.deepEqual(rows.map(r => r.revoked_reason), ['session_limit'])
    for (const live of [logins[51]!, newest]) assert.equal(await sessionStatus(app, live), 200)
  })

test(
  'GET /auth/sessions pages: ?limit= and an opaque cursor, newest first, every live session once; nextCursor null on the last page',
  async () => {
    const all = await listPage(newest)
    assert.equal(all.sessions.length, 50, 'the default page is 50')
    assert.equal(all.nextCursor, null)

    const seen: Entry[] = []
    let cursor: string | null = null
    let pages = 0
    do {
      const page: Page = await listPage(newest, `?limit=20${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`)
      assert.ok(page.sessions.length <= 20)
      seen.push(...page.sessions)
      cursor = page.nextCursor
      pages++
    } while (cursor)
    assert.equal(pages, 3)
    assert.deepEqual(seen.map(s => s.id), all.sessions.map(s => s.id), 'the pages join into the whole list, in its order')
    assert.equal(new Set(seen.map(s => s.id)).size, 50, 'no session twice')
    assert.deepEqual(seen.map(s => s.id).sort(), logins.slice(51).map(l => l.session.id).sort())
    const times = seen.map(s => Date.parse(s.createdAt))
    assert.deepEqual(times, [...times].sort((x, y) => y - x), 'newest first')
    assert.deepEqual(seen.filter(s => s.current).map(s => s.id), [newest.session.id])

    // A session used between two pages does not move: the order is by when it started.
    const first = await listPage(newest, '?limit=10')
    await app.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refreshToken: logins[60]!.refreshToken } })
    const second = await listPage(newest, `?limit=10&cursor=${encodeURIComponent(first.nextCursor!)}`)
    assert.deepEqual([...first.sessions, ...second.sessions].map(s => s.id), all.sessions.slice(0, 20).map(s => s.id))
  })

test('bad paging input is a 400, never a 500', async () => {
  const queries = ['?limit=0', '?limit=101', '?limit=abc', '?cursor=', '?cursor=bm90LWEtY3Vyc29y', `?cursor=${'A'.repeat(200)}`, '?other=1']
  for (const query of queries) {
    assertProblem(await app.inject({ url: `/api/v1/auth/sessions${query}`, headers: bearer(newest) }), 400, 'VALIDATION_FAILED')
  }
  assert.equal((await listPage(newest, '?limit=100')).sessions.length, 50)
})

test('concurrent logins of one user cannot pass the limit together', async () => {
  const small = await buildTestApp(testConfig(db, {
    AUTH_RATE_LIMIT_MAX: 10_000,
    LOGIN_MAX_FAILURES_PER_CLIENT: 10_000,
    MAX_SESSIONS_PER_USER: 5
  }))
  const someone = await signup(small)
  const results = await Promise.all(Array.from({ length: 16 }, () => login(small, { email: someone.user.email })))
  assert.deepEqual([...new Set(results.map(r => r.statusCode))], [200])
  assert.equal(await liveFamilies(someone.user.id), 5)
})
