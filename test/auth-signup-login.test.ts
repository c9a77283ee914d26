import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { SessionEnvelope } from '../services/accounts.js'
import { adminClient, buildTestApp, captureLogs, createTestDatabase, testConfig, waitFor } from './support/app.js'
import {
  addMember, bearer, login, operatorExists, PASSWORD, sessionStatus, sha256, signup, tenantStatus, uniqueEmail
} from './support/actors.js'
import { assertProblem } from './support/assertions.js'

const db = await createTestDatabase()
const operatorEmail = uniqueEmail('Operator')
const app = await buildTestApp(testConfig(db, {
  AUTH_RATE_LIMIT_MAX: 1000,
  OPERATOR_BOOTSTRAP_EMAIL: operatorEmail,
  OPERATOR_BOOTSTRAP_PASSWORD: 'operator password 1'
}))
const admin = await adminClient(db)

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
const TOKEN = /^[0-9a-f]{32}\.[A-Za-z0-9_-]{43}$/

function assertEnvelope (body: SessionEnvelope, expected: { email: string, tenant: SessionEnvelope['tenant'] | 'any' }) {
  assert.deepEqual(Object.keys(body).sort(), ['accessToken', 'expiresIn', 'refreshToken', 'session', 'tenant', 'user'])
  assert.match(body.accessToken, TOKEN)
  assert.match(body.refreshToken, TOKEN)
  assert.notEqual(body.accessToken, body.refreshToken)
  assert.equal(body.expiresIn, 900, 'ACCESS_TOKEN_TTL_S default')
  assert.deepEqual(Object.keys(body.user).sort(), ['email', 'id'])
  assert.match(body.user.id, UUID)
  assert.equal(body.user.email, expected.email)
  assert.deepEqual(Object.keys(body.session), ['id'])
  assert.match(body.session.id, UUID)
  if (expected.tenant !== 'any') assert.deepEqual(body.tenant, expected.tenant)
}

test('signup: 201 with the session envelope; user, tenant, owner membership and session exist', async () => {
  const email = uniqueEmail('Signup')
  const res = await app.inject({
    method: 'POST', url: '/api/v1/auth/signup', payload: { email, password: PASSWORD, tenantName: '  Acme Corp!  ' }
  })
  assert.equal(res.statusCode, 201, res.body)
  assert.match(String(res.headers['content-type']), /^application\/json/)
  const body = res.json() as SessionEnvelope
  assertEnvelope(body, { email: email.toLowerCase(), tenant: 'any' })
  assert.deepEqual(Object.keys(body.tenant!).sort(), ['id', 'name', 'role', 'slug'])
  assert.equal(body.tenant!.name, 'Acme Corp!')
  assert.equal(body.tenant!.role, 'owner')
  assert.match(body.tenant!.slug, /^acme-corp(-[0-9a-f]{6})?$/)
  assert.match(body.tenant!.id, UUID)

  const { rows: [membership] } = await admin.query(
    'SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $2', [body.tenant!.id, body.user.id])
  assert.equal(membership.role, 'owner')
  const { rows: sessions } = await admin.query(
    'SELECT family_id, tenant_id, ip, user_agent FROM auth_sessions WHERE user_id = $1', [body.user.id])
  assert.equal(sessions.length, 1)
  assert.equal(sessions[0].family_id, body.session.id)
  assert.equal(sessions[0].tenant_id, body.tenant!.id)
  // The tokens work at once.
  const tenant = await app.inject({ url: '/api/v1/tenant', headers: bearer(body) })
  assert.equal(tenant.statusCode, 200)
  assert.equal(tenant.json().slug, body.tenant!.slug)
})

test('tokens: 256 random bits after the user id, stored only as SHA-256', async () => {
  const a = await signup(app)
  const b = await signup(app)
  for (const token of [a.accessToken, a.refreshToken]) {
    const [prefix, secret] = token.split('.') as [string, string]
    assert.equal(prefix, a.user.id.replace(/-/g, ''), 'the prefix is the user id (not secret)')
    assert.equal(Buffer.from(secret, 'base64url').length, 32, '256 bits ≥ 128')
  }
  assert.notEqual(a.accessToken.split('.')[1], b.accessToken.split('.')[1])
  const { rows: [row] } = await admin.query('SELECT * FROM auth_sessions WHERE family_id = $1', [a.session.id])
  assert.deepEqual(row.access_token_hash, sha256(a.accessToken))
  assert.deepEqual(row.refresh_token_hash, sha256(a.refreshToken))
  // Neither plaintext token (as text, or as the hex of its bytes) appears anywhere in the table.
  for (const token of [a.accessToken, a.refreshToken]) {
    const secret = token.split('.')[1]!
    const { rows: [{ n }] } = await admin.query(
      'SELECT count(*)::int AS n FROM auth_sessions s WHERE strpos(s::text, $1) > 0 OR strpos(s::text, $2) > 0',
      [secret, Buffer.from(secret).toString('hex')])
    assert.equal(n, 0, 'no plaintext token stored')
  }
})

test('email is unique case-insensitively: the same address in other case is a 409', async () => {
  const email = uniqueEmail('dup')
  await signup(app, { email })
  const again = await app.inject({
    method: 'POST', url: '/api/v1/auth/signup', payload: { email: email.toUpperCase(), password: PASSWORD, tenantName: 'Other' }
  })
  assertProblem(again, 409, 'CONFLICT')
  const { rows: [{ n }] } = await admin.query('SELECT count(*)::int AS n FROM users WHERE lower(email) = $1', [email])
  assert.equal(n, 1)
  // And login works with any case.
  const res = await login(app, { email: email.toUpperCase() })
  assert.equal(res.statusCode, 200, res.body)
})

test('two concurrent signups with one email: one 201, one 409, never a 500', async () => {
  const email = uniqueEmail('race')
  const results = await Promise.all([email, email.toUpperCase()].map(e =>
    app.inject({ method: 'POST', url: '/api/v1/auth/signup', payload: { email: e, password: PASSWORD, tenantName: 'Race' } })))
  assert.deepEqual(results.map(r => r.statusCode).sort(), [201, 409])
})

test('a slug clash gets a suffix; the tenant name is kept', async () => {
  const first = await signup(app, { tenantName: 'Clash Industries' })
  const second = await signup(app, { tenantName: 'Clash Industries' })
  assert.equal(first.tenant!.slug, 'clash-industries')
  assert.match(second.tenant!.slug, /^clash-industries-[0-9a-f]{6}$/)
  assert.equal(second.tenant!.name, 'Clash Industries')
  const odd = await signup(app, { tenantName: '!!!' })
  assert.match(odd.tenant!.slug, /^tenant(-[0-9a-f]{6})?$/, 'a name with no usable characters still gets a slug')
})

test('login: a single-tenant user needs no tenant; by id or slug; TENANT_REQUIRED with several; 403 for a non-member tenant', async () => {
  const owner = await signup(app, { tenantName: 'Login First' })
  const other = await signup(app, { tenantName: 'Login Second' })
  const email = owner.user.email

  const plain = await login(app, { email })
  assert.equal(plain.statusCode, 200, plain.body)
  assertEnvelope(plain.json(), { email, tenant: { ...owner.tenant!, role: 'owner' } })
  assert.notEqual(plain.json().session.id, owner.session.id, 'a login starts a new session')

  // Make the owner a member of a second tenant.
  const add = await addMember(app, other, email)
  assert.equal(add.statusCode, 201, add.body)

  const body = assertProblem(await login(app, { email }), 400, 'TENANT_REQUIRED')
  assert.match(body.detail, /2 tenants/)
  const bySlug = await login(app, { email, tenant: other.tenant!.slug })
  assert.equal(bySlug.statusCode, 200, bySlug.body)
  assertEnvelope(bySlug.json(), { email, tenant: { ...other.tenant!, role: 'member' } })
  const byId = await login(app, { email, tenant: owner.tenant!.id.toUpperCase() })
  assert.equal(byId.statusCode, 200, byId.body)
  assert.equal(byId.json().tenant.id, owner.tenant!.id)
  // The session acts in the tenant it was opened for.
  assert.equal((await app.inject({ url: '/api/v1/tenant', headers: bearer(bySlug.json()) })).json().id, other.tenant!.id)

  const stranger = await signup(app, { tenantName: 'Login Third' })
  assertProblem(await login(app, { email, tenant: stranger.tenant!.slug }), 403, 'TENANT_FORBIDDEN')
  assertProblem(await login(app, { email, tenant: 'no-such-tenant' }), 403, 'TENANT_FORBIDDEN')
  // The wrong password never reaches the tenant choice.
  assertProblem(await login(app, { email, password: 'wrong password', tenant: stranger.tenant!.slug }), 401, 'AUTH_INVALID_CREDENTIALS')
})

test('operator: bootstrapped from the config once, logs in with tenant null, and cannot use tenant routes', async () => {
  await waitFor(() => operatorExists(admin, operatorEmail), { what: 'the bootstrap operator' })
  const { rows: [user] } = await admin.query('SELECT email, password_hash FROM users WHERE lower(email) = lower($1)', [operatorEmail])
  assert.equal(user.email, operatorEmail.toLowerCase())
  assert.match(user.password_hash, /^\$argon2id\$v=19\$m=19456,t=2,p=1\$/)

  const res = await login(app, { email: operatorEmail, password: 'operator password 1' })
  assert.equal(res.statusCode, 200, res.body)
  const op = res.json() as SessionEnvelope
  assertEnvelope(op, { email: operatorEmail.toLowerCase(), tenant: null })
  const { rows: [session] } = await admin.query('SELECT tenant_id FROM auth_sessions WHERE family_id = $1', [op.session.id])
  assert.equal(session.tenant_id, null)
  assert.equal(await sessionStatus(app, op), 200, 'any-session routes accept it')
  assertProblem(await app.inject({ url: '/api/v1/tenant', headers: bearer(op) }), 403, 'TENANT_FORBIDDEN')

  // A second app on the same database (the same address in other case) creates nothing new.
  const logs = captureLogs()
  await buildTestApp(testConfig(db, {
    LOG_LEVEL: 'info',
    OPERATOR_BOOTSTRAP_EMAIL: operatorEmail.toUpperCase(),
    OPERATOR_BOOTSTRAP_PASSWORD: 'another password'
  }), { logs })
  const line = await waitFor(() => logs.lines.find(l => l.msg === 'operator bootstrap'), { what: 'the second bootstrap' })
  assert.equal(line.outcome, 'exists')
  assert.equal((await login(app, { email: operatorEmail, password: 'operator password 1' })).statusCode, 200,
    'the first password still holds')
  const { rows: [{ n }] } = await admin.query('SELECT count(*)::int AS n FROM users WHERE lower(email) = lower($1)', [operatorEmail])
  assert.equal(n, 1)
})

test('an ordinary tenant session is refused on operator routes', async () => {
  const owner = await signup(app)
  assert.equal(await tenantStatus(app, owner), 200)
  const ops = await app.inject({ url: '/api/v1/operator/tenants', headers: bearer(owner) })
  assertProblem(ops, 403, 'AUTH_FORBIDDEN')
})
