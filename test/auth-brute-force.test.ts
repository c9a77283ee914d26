import assert from 'node:assert/strict'
import { test } from 'node:test'
import { buildTestApp, createTestDatabase, testConfig } from './helper.js'
import { adminClient, assertProblem, login, PASSWORD, refresh, signup, uniqueEmail } from './support/identity.js'

const db = await createTestDatabase()
const admin = await adminClient(db)
// Signs users up on an app of its own, so no limit under test is spent on the setup.
const setup = await buildTestApp(testConfig(db, { AUTH_RATE_LIMIT_MAX: 10_000 }))
// Per-IP and per-account request limits (in memory): each test below uses IPs and accounts of its own.
const limited = await buildTestApp(testConfig(db, { AUTH_RATE_LIMIT_MAX: 3 }))
// The per-account failure budget, on two replicas.
const lockConfig = testConfig(db, { LOGIN_MAX_FAILURES_PER_HOUR: 3, AUTH_RATE_LIMIT_MAX: 10_000 })
const a = await buildTestApp(lockConfig)
const b = await buildTestApp(lockConfig)

const from = (ip: string) => ({ remoteAddress: ip })

test('per IP: AUTH_RATE_LIMIT_MAX logins per window, then 429 RATE_LIMITED with Retry-After; other IPs unaffected', async () => {
  const user = await signup(setup)
  const codes: number[] = []
  // Different accounts each time: this is the per-IP budget, not the per-account one.
  for (let i = 0; i < 3; i++) {
    codes.push((await limited.inject({ method: 'POST', url: '/api/v1/auth/login', ...from('198.51.100.1'), payload: { email: uniqueEmail(), password: PASSWORD } })).statusCode)
  }
  assert.deepEqual(codes, [401, 401, 401])
  const refused = await limited.inject({ method: 'POST', url: '/api/v1/auth/login', ...from('198.51.100.1'), payload: { email: user.user.email, password: PASSWORD } })
  const body = assertProblem(refused, 429, 'RATE_LIMITED')
  assert.ok(Number(refused.headers['retry-after']) > 0, 'Retry-After')
  assert.match(body.detail, /rate limit/)
  const elsewhere = await limited.inject({ method: 'POST', url: '/api/v1/auth/login', ...from('198.51.100.2'), payload: { email: user.user.email, password: PASSWORD } })
  assert.equal(elsewhere.statusCode, 200, elsewhere.body)

  // Sign-up and refresh are limited per IP too.
  for (let i = 0; i < 3; i++) await limited.inject({ method: 'POST', url: '/api/v1/auth/refresh', ...from('198.51.100.3'), payload: { refreshToken: 'x' } })
  assertProblem(await limited.inject({ method: 'POST', url: '/api/v1/auth/refresh', ...from('198.51.100.3'), payload: { refreshToken: user.refreshToken } }), 429, 'RATE_LIMITED')
  for (let i = 0; i < 3; i++) await limited.inject({ method: 'POST', url: '/api/v1/auth/signup', ...from('198.51.100.4'), payload: { email: 'bad' } })
  assertProblem(await limited.inject({ method: 'POST', url: '/api/v1/auth/signup', ...from('198.51.100.4'), payload: { email: uniqueEmail(), password: PASSWORD, tenantName: 'Late' } }), 429, 'RATE_LIMITED')
})

test('per account (requests): one email from many IPs is limited too', async () => {
  const user = await signup(setup)
  const codes: number[] = []
  for (let i = 0; i < 4; i++) {
    codes.push((await limited.inject({ method: 'POST', url: '/api/v1/auth/login', ...from(`192.0.2.${i + 1}`), payload: { email: user.user.email.toUpperCase(), password: 'wrong password' } })).statusCode)
  }
  assert.deepEqual(codes, [401, 401, 401, 429])
  const refused = await limited.inject({ method: 'POST', url: '/api/v1/auth/login', ...from('192.0.2.99'), payload: { email: user.user.email, password: PASSWORD } })
  assertProblem(refused, 429, 'RATE_LIMITED')
  assert.match(String(refused.headers['ratelimit-policy']), /"account";q=3/)
})

test('per account (failures): locked after LOGIN_MAX_FAILURES_PER_HOUR, even for the right password, on every replica', async () => {
  const victim = await signup(setup)
  const bystander = await signup(setup)

  // Failures spread over both replicas add up (they are counted in Postgres).
  const codes = [
    (await login(a, { email: victim.user.email, password: 'guess 1 wrong' })).statusCode,
    (await login(b, { email: victim.user.email, password: 'guess 2 wrong' })).statusCode,
    (await login(a, { email: victim.user.email, password: 'guess 3 wrong' })).statusCode
  ]
  assert.deepEqual(codes, [401, 401, 401])
  for (const app of [a, b]) {
    const locked = await login(app, { email: victim.user.email })
    assertProblem(locked, 429, 'RATE_LIMITED')
    const retryAfter = Number(locked.headers['retry-after'])
    assert.ok(retryAfter > 3500 && retryAfter <= 3600, `Retry-After ${retryAfter} s: the rest of the hour`)
  }
  assert.equal((await login(b, { email: bystander.user.email })).statusCode, 200, 'other accounts are not locked')

  // An hour later the window is over and the right password works (and resets the count).
  await admin.query("UPDATE users SET failed_window_start = failed_window_start - interval '1 hour' WHERE id = $1", [victim.user.id])
  assert.equal((await login(b, { email: victim.user.email })).statusCode, 200)
  const { rows: [row] } = await admin.query('SELECT failed_logins FROM users WHERE id = $1', [victim.user.id])
  assert.equal(row.failed_logins, 0)
})

test('per account (failures): a burst of concurrent guesses gets at most the budget verified, the rest 429', async () => {
  const victim = await signup(setup)
  const results = await Promise.all(Array.from({ length: 12 }, (_, i) =>
    login(i % 2 ? a : b, { email: victim.user.email, password: `concurrent guess ${i}` })))
  const codes = results.map(r => r.statusCode).sort()
  assert.deepEqual(codes, [...Array(3).fill(401), ...Array(9).fill(429)], 'exactly the budget was spent on verification')
})

test('a successful login resets the count; a right password with a missing tenant is no failure', async () => {
  const user = await signup(setup)
  for (let round = 0; round < 2; round++) {
    for (let i = 0; i < 2; i++) assert.equal((await login(a, { email: user.user.email, password: 'wrong password' })).statusCode, 401)
    assert.equal((await login(a, { email: user.user.email })).statusCode, 200, `round ${round}`)
  }
  // A user of two tenants who forgets `tenant` is not locked out for it.
  const other = await signup(setup)
  assert.equal((await setup.inject({ method: 'POST', url: '/api/v1/tenant/members', headers: { authorization: `Bearer ${other.accessToken}` }, payload: { email: user.user.email, role: 'member' } })).statusCode, 201)
  for (let i = 0; i < 4; i++) assertProblem(await login(a, { email: user.user.email }), 400, 'TENANT_REQUIRED')
  assert.equal((await login(a, { email: user.user.email, tenant: other.tenant!.slug })).statusCode, 200)
})

test('unknown emails lock nothing and reveal nothing: always the same 401', async () => {
  const email = uniqueEmail('ghost')
  for (let i = 0; i < 5; i++) assertProblem(await login(b, { email }), 401, 'AUTH_INVALID_CREDENTIALS')
  // Refresh is not a credential guess: a bad refresh token never locks the account.
  const user = await signup(setup)
  for (let i = 0; i < 5; i++) assertProblem(await refresh(b, `${user.user.id.replace(/-/g, '')}.${'A'.repeat(43)}`), 401, 'AUTH_INVALID_TOKEN')
  assert.equal((await login(b, { email: user.user.email })).statusCode, 200)
})
