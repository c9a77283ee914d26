import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { test } from 'node:test'
import type { SessionEnvelope } from '../services/accounts.js'
import { adminClient, buildTestApp, captureLogs, createTestDatabase, testConfig } from './support/app.js'
import { bearer, login, PASSWORD, signup, uniqueEmail } from './support/actors.js'
import { assertProblem } from './support/assertions.js'

const db = await createTestDatabase()
const logs = captureLogs()
const app = await buildTestApp(testConfig(db, { AUTH_RATE_LIMIT_MAX: 10_000, LOG_LEVEL: 'error' }), { logs })
const admin = await adminClient(db)
const owner = await signup(app)

const post = (url: string, payload: unknown, headers: Record<string, string> = {}) =>
  app.inject({ method: 'POST', url, payload: payload as object, headers })

/** 400 VALIDATION_FAILED whose first error names `field`. */
function assertInvalid (res: Awaited<ReturnType<typeof post>>, field: string) {
  const body = assertProblem(res, 400, 'VALIDATION_FAILED')
  assert.ok(Array.isArray(body.errors) && body.errors.length > 0)
  assert.equal(body.errors[0]!.field, field, res.body)
  assert.ok(body.detail.startsWith(field), body.detail)
}

test('signup: malformed, missing, oversize and unknown fields are 400 naming the field', async () => {
  const good = () => ({ email: uniqueEmail(), password: PASSWORD, tenantName: 'Valid Name' })
  const cases: Array<[Record<string, unknown>, string]> = [
    [{ ...good(), email: 'not-an-email' }, 'body.email'],
    [{ ...good(), email: 'a@' }, 'body.email'],
    [{ ...good(), email: `${'a'.repeat(250)}@example.test` }, 'body.email'],
    [{ ...good(), email: 42 }, 'body.email'],
    [{ ...good(), email: 'nul\u0000@example.test' }, 'body.email'],
    [{ ...good(), password: 'short12' }, 'body.password'],
    [{ ...good(), password: 'x'.repeat(257) }, 'body.password'],
    [{ ...good(), tenantName: '' }, 'body.tenantName'],
    [{ ...good(), tenantName: 'x'.repeat(201) }, 'body.tenantName'],
    [{ ...good(), tenantName: '    ' }, 'body.tenantName'],
    [{ ...good(), tenantName: 'nul\u0000byte' }, 'body.tenantName'],
    [{ ...good(), isOperator: true }, 'body.isOperator'],
    [{ email: uniqueEmail(), password: PASSWORD }, 'body.tenantName']
  ]
  for (const [payload, field] of cases) {
    const res = await post('/api/v1/auth/signup', payload)
    assert.notEqual(res.statusCode, 500, `${JSON.stringify(payload)}: ${res.body}`)
    assertInvalid(res, field)
  }
  // Nothing of the refused sign-ups reached the database.
  const { rows: [{ n }] } = await admin.query('SELECT count(*)::int AS n FROM users')
  assert.equal(n, 1)
  // The edges that are allowed.
  const edge = await post('/api/v1/auth/signup', { email: uniqueEmail(), password: 'x'.repeat(8), tenantName: 'y'.repeat(200) })
  assert.equal(edge.statusCode, 201, edge.body)
  assert.equal(edge.json().tenant.name, 'y'.repeat(200))
})

test('login, refresh, password and sessions: bad bodies and params are 400', async () => {
  assertInvalid(await post('/api/v1/auth/login', { email: 'nope', password: PASSWORD }), 'body.email')
  assertInvalid(await post('/api/v1/auth/login', { email: owner.user.email }), 'body.password')
  assertInvalid(await post('/api/v1/auth/login', { email: owner.user.email, password: '' }), 'body.password')
  assertInvalid(await post('/api/v1/auth/login', { email: owner.user.email, password: PASSWORD, tenant: 'x'.repeat(65) }), 'body.tenant')
  assertInvalid(await post('/api/v1/auth/login', { email: owner.user.email, password: PASSWORD, remember: true }), 'body.remember')
  assertInvalid(await post('/api/v1/auth/refresh', {}), 'body.refreshToken')
  assertInvalid(await post('/api/v1/auth/refresh', { refreshToken: 'x'.repeat(201) }), 'body.refreshToken')
  assertInvalid(await post('/api/v1/auth/refresh', { refreshToken: owner.refreshToken, accessToken: owner.accessToken }),
    'body.accessToken')
  assertInvalid(await post('/api/v1/auth/password', { currentPassword: PASSWORD }, bearer(owner)), 'body.newPassword')
  assertInvalid(await post('/api/v1/auth/password', { currentPassword: PASSWORD, newPassword: 'x'.repeat(257) }, bearer(owner)),
    'body.newPassword')
  const longId = await app.inject({ method: 'DELETE', url: `/api/v1/auth/sessions/${'a'.repeat(65)}`, headers: bearer(owner) })
  assertInvalid(longId, 'params.id')
  // Not JSON at all.
  const rawLogin = (contentType: string, payload: string) =>
    app.inject({ method: 'POST', url: '/api/v1/auth/login', headers: { 'content-type': contentType }, payload })
  assertProblem(await rawLogin('application/json', '{"email":'), 400, 'MALFORMED_JSON')
  assertProblem(await rawLogin('text/plain', 'email=a'), 400, 'VALIDATION_FAILED')
  assertProblem(await rawLogin('application/xml', '<email/>'), 415, 'UNSUPPORTED_MEDIA_TYPE')
  assertProblem(await rawLogin('application/json', '[]'), 400, 'VALIDATION_FAILED')
  assertProblem(await rawLogin('application/json', '{"__proto__":{"x":1},"email":"a@b.co","password":"12345678"}'), 400, 'MALFORMED_JSON')
})

test('tokens: missing → AUTH_UNAUTHENTICATED; garbage, unknown, expired, revoked → AUTH_INVALID_TOKEN', async () => {
  assertProblem(await app.inject({ url: '/api/v1/tenant' }), 401, 'AUTH_UNAUTHENTICATED')
  const basic = `Basic ${Buffer.from('a:b').toString('base64')}`
  assertProblem(await app.inject({ url: '/api/v1/tenant', headers: { authorization: basic } }), 401, 'AUTH_UNAUTHENTICATED')
  assertProblem(await app.inject({ url: '/api/v1/tenant', headers: { authorization: 'Bearer' } }), 401, 'AUTH_UNAUTHENTICATED')
  assertProblem(await app.inject({ method: 'POST', url: '/api/v1/auth/logout' }), 401, 'AUTH_UNAUTHENTICATED')

  const unknown = `${owner.user.id.replace(/-/g, '')}.${randomBytes(32).toString('base64url')}`
  const strangerPrefix = `${'0'.repeat(32)}.${owner.accessToken.split('.')[1]}`
  const tokens = [
    'garbage', 'a.b', `${'z'.repeat(32)}.${'A'.repeat(43)}`, unknown, strangerPrefix, owner.refreshToken, `${owner.accessToken}x`
  ]
  for (const token of tokens) {
    assertProblem(await app.inject({ url: '/api/v1/tenant', headers: bearer(token) }), 401, 'AUTH_INVALID_TOKEN')
  }
  const lower = await app.inject({ url: '/api/v1/tenant', headers: { authorization: `bearer ${owner.accessToken}` } })
  assert.equal(lower.statusCode, 200, 'the scheme is case-insensitive (RFC 9110)')

  const expired = await signup(app)
  await admin.query("UPDATE auth_sessions SET access_expires_at = now() - interval '1 second' WHERE family_id = $1", [expired.session.id])
  assertProblem(await app.inject({ url: '/api/v1/tenant', headers: bearer(expired) }), 401, 'AUTH_INVALID_TOKEN')
  const revoked = await signup(app)
  assert.equal((await app.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(revoked) })).statusCode, 204)
  assertProblem(await app.inject({ url: '/api/v1/auth/sessions', headers: bearer(revoked) }), 401, 'AUTH_INVALID_TOKEN')
})

test('wrong role → 403; duplicate signup → 409; wrong credentials → 401', async () => {
  const member = await signup(app)
  assert.equal((await post('/api/v1/tenant/members', { email: member.user.email, role: 'member' }, bearer(owner))).statusCode, 201)
  const inOwners = (await login(app, { email: member.user.email, tenant: owner.tenant!.id })).json() as SessionEnvelope
  assertProblem(await post('/api/v1/tenant/members', { email: uniqueEmail(), role: 'member' }, bearer(inOwners)), 403, 'TENANT_FORBIDDEN')
  assertProblem(await app.inject({ url: '/api/v1/operator/tenants', headers: bearer(owner) }), 403, 'AUTH_FORBIDDEN')
  assertProblem(await post('/api/v1/auth/signup', { email: owner.user.email, password: PASSWORD, tenantName: 'Again' }), 409, 'CONFLICT')
  assertProblem(await login(app, { email: owner.user.email, password: 'wrong password' }), 401, 'AUTH_INVALID_CREDENTIALS')
})

test('hostile metadata never breaks a request: a spoofed X-Forwarded-For that is no IP, a huge User-Agent', async () => {
  const proxied = await buildTestApp(testConfig(db, { TRUST_PROXY: 1, AUTH_RATE_LIMIT_MAX: 10_000 }))
  const res = await proxied.inject({
    method: 'POST',
    url: '/api/v1/auth/signup',
    headers: { 'x-forwarded-for': 'not-an-ip, also<script>', 'user-agent': 'u'.repeat(4000) },
    payload: { email: uniqueEmail(), password: PASSWORD, tenantName: 'Hostile' }
  })
  assert.equal(res.statusCode, 201, res.body)
  const { rows: [row] } = await admin.query(
    'SELECT host(ip) AS ip, length(user_agent) AS ua FROM auth_sessions WHERE family_id = $1', [res.json().session.id])
  assert.equal(row.ip, '127.0.0.1', 'a hop that is no address is replaced by the peer that sent it')
  assert.equal(row.ua, 512)
  const real = await proxied.inject({
    method: 'POST',
    url: '/api/v1/auth/login',
    headers: { 'x-forwarded-for': '203.0.113.9' },
    payload: { email: owner.user.email, password: PASSWORD }
  })
  assert.equal(real.statusCode, 200, real.body)
  const { rows: [r2] } = await admin.query('SELECT host(ip) AS ip FROM auth_sessions WHERE family_id = $1', [real.json().session.id])
  assert.equal(r2.ip, '203.0.113.9')
})

test('none of the above was a 500, and nothing was logged as an unhandled error', () => {
  const errors = logs.lines.filter(l => Number(l.level) >= 50)
  assert.deepEqual(errors.map(l => l.msg), [])
})
