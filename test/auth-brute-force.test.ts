import assert from 'node:assert/strict'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { test } from 'node:test'
import type { SessionEnvelope } from '../services/accounts.js'
import { adminClient, buildTestApp, createTestDatabase, testConfig } from './support/app.js'
import { addMember, bearer, login, PASSWORD, refresh, signup, tenantStatus, uniqueEmail } from './support/actors.js'
import { assertProblem } from './support/assertions.js'

const db = await createTestDatabase()
const admin = await adminClient(db)
// Signs users up on an app of its own, so no limit under test is spent on the setup.
const setup = await buildTestApp(testConfig(db, { AUTH_RATE_LIMIT_MAX: 10_000 }))
// Per-IP request limits (in memory): each test below uses IPs and accounts of its own.
const limited = await buildTestApp(testConfig(db, { AUTH_RATE_LIMIT_MAX: 3 }))
// The failure budgets, on two replicas: 3 per (email, client), 6 per email.
const CEILING_DELAY_MS = 300
const budgetConfig = testConfig(db, {
  LOGIN_MAX_FAILURES_PER_CLIENT: 3,
  LOGIN_MAX_FAILURES_PER_HOUR: 6,
  LOGIN_CEILING_DELAY_MS: CEILING_DELAY_MS,
  AUTH_RATE_LIMIT_MAX: 10_000
})
const a = await buildTestApp(budgetConfig)
const b = await buildTestApp(budgetConfig)
// The defaults (20 per IP per minute, 10 failures per client, 100 per account): what a deployment runs.
const defaults = await buildTestApp(testConfig(db))

// app.inject's remoteAddress is the socket peer, which is request.ip without a trusted proxy.
const from = (ip: string) => ({ remoteAddress: ip })
const postFrom = (app: typeof a, url: string, ip: string, payload: object) =>
  app.inject({ method: 'POST', url, ...from(ip), payload })
const loginFrom = (app: typeof a, ip: string, email: string, password = PASSWORD) =>
  postFrom(app, '/api/v1/auth/login', ip, { email, password })
let nextNet = 0
/** A /24 no other test uses, for addresses of its own. */
const net = () => `203.0.${++nextNet}`

test('per IP: AUTH_RATE_LIMIT_MAX logins per window, then 429 RATE_LIMITED with Retry-After; other IPs unaffected', async () => {
  const user = await signup(setup)
  const codes: number[] = []
  // Different accounts each time: this is the per-IP budget.
  for (let i = 0; i < 3; i++) {
    codes.push((await loginFrom(limited, '198.51.100.1', uniqueEmail())).statusCode)
  }
  assert.deepEqual(codes, [401, 401, 401])
  const refused = await loginFrom(limited, '198.51.100.1', user.user.email)
  const body = assertProblem(refused, 429, 'RATE_LIMITED')
  assert.ok(Number(refused.headers['retry-after']) > 0, 'Retry-After')
  assert.match(body.detail, /rate limit/)
  const elsewhere = await loginFrom(limited, '198.51.100.2', user.user.email)
  assert.equal(elsewhere.statusCode, 200, elsewhere.body)

  // Sign-up and refresh are limited per IP too.
  for (let i = 0; i < 3; i++) await postFrom(limited, '/api/v1/auth/refresh', '198.51.100.3', { refreshToken: 'x' })
  assertProblem(await postFrom(limited, '/api/v1/auth/refresh', '198.51.100.3', { refreshToken: user.refreshToken }), 429, 'RATE_LIMITED')
  for (let i = 0; i < 3; i++) await postFrom(limited, '/api/v1/auth/signup', '198.51.100.4', { email: 'bad' })
  const late = { email: uniqueEmail(), password: PASSWORD, tenantName: 'Late' }
  assertProblem(await postFrom(limited, '/api/v1/auth/signup', '198.51.100.4', late), 429, 'RATE_LIMITED')
})

test(
  'per (account, client): LOGIN_MAX_FAILURES_PER_CLIENT failures, then 429 + Retry-After for that client alone on every replica for 1 h',
  async () => {
    const victim = await signup(setup)
    const n = net()
    const attacker = `${n}.1`
    // Failures spread over both replicas add up (they are counted in Postgres).
    const codes = [
      (await loginFrom(a, attacker, victim.user.email, 'guess 1 wrong')).statusCode,
      (await loginFrom(b, attacker, victim.user.email, 'guess 2 wrong')).statusCode,
      (await loginFrom(a, attacker, victim.user.email, 'guess 3 wrong')).statusCode
    ]
    assert.deepEqual(codes, [401, 401, 401])
    for (const app of [a, b]) {
      // Refused before the password is checked: the right one gets the same 429.
      const refused = await loginFrom(app, attacker, victim.user.email)
      assertProblem(refused, 429, 'RATE_LIMITED')
      const retryAfter = Number(refused.headers['retry-after'])
      assert.ok(retryAfter > 3500 && retryAfter <= 3600, `Retry-After ${retryAfter} s: the rest of the client's hour`)
    }
    // The owner, from an address of their own, is not refused, and not slowed (below the ceiling).
    const started = Date.now()
    assert.equal((await loginFrom(b, `${n}.2`, victim.user.email)).statusCode, 200, 'the owner logs in from elsewhere')
    assert.ok(Date.now() - started < CEILING_DELAY_MS + 2000)

    // An hour later the attacker's window is over (the clock moved, not slept).
    await admin.query("UPDATE login_failures SET window_start = window_start - interval '1 hour'")
    assert.equal((await loginFrom(a, attacker, victim.user.email)).statusCode, 200)
  })

test('per (account, client): a burst of concurrent guesses gets exactly the budget verified, the rest 429', async () => {
  const victim = await signup(setup)
  const attacker = `${net()}.1`
  const results = await Promise.all(Array.from({ length: 12 }, (_, i) =>
    loginFrom(i % 2 ? a : b, attacker, victim.user.email, `concurrent guess ${i}`)))
  const codes = results.map(r => r.statusCode).sort()
  assert.deepEqual(codes, [...Array(3).fill(401), ...Array(9).fill(429)], 'exactly the budget was spent on verification')
})

test(
  'the account ceiling refuses only clients that failed on it; a client that has not failed logs in, slowed by LOGIN_CEILING_DELAY_MS',
  async () => {
    const victim = await signup(setup)
    const n = net()
    // Six failures from three addresses: the email is at its ceiling of 6, no client at its 3.
    for (const host of [1, 2, 3]) {
      for (let i = 0; i < 2; i++) assert.equal((await loginFrom(a, `${n}.${host}`, victim.user.email, 'wrong password')).statusCode, 401)
    }
    // Each of those clients is refused now, even below its own budget and with the right password.
    for (const host of [1, 2, 3]) assertProblem(await loginFrom(b, `${n}.${host}`, victim.user.email), 429, 'RATE_LIMITED')
    // A fresh client gets one guess, slowed; having failed, it is refused too.
    let started = Date.now()
    assert.equal((await loginFrom(a, `${n}.4`, victim.user.email, 'wrong password')).statusCode, 401)
    assert.ok(Date.now() - started >= CEILING_DELAY_MS, 'slowed past the ceiling')
    assertProblem(await loginFrom(a, `${n}.4`, victim.user.email), 429, 'RATE_LIMITED')
    // The owner, from an address that has not failed: through, after the bounded delay.
    started = Date.now()
    const owner = await loginFrom(b, `${n}.200`, victim.user.email)
    const took = Date.now() - started
    assert.equal(owner.statusCode, 200, owner.body)
    assert.ok(took >= CEILING_DELAY_MS, `slowed: ${took} ms`)
    // Other accounts are not affected.
    const bystander = await signup(setup)
    assert.equal((await loginFrom(a, `${n}.1`, bystander.user.email)).statusCode, 200)
  })

test(
  'defaults: after an attacker\'s 100+ failures from other addresses, the owner\'s right password from a fresh client still logs in',
  async () => {
    const victim = await signup(setup)
    const n = net()
    const codes: number[] = []
    // 11 addresses × 10 guesses (each address within its 20 per minute): 110 guesses.
    for (let host = 1; host <= 11; host++) {
      const batch = await Promise.all(Array.from({ length: 10 }, (_, i) =>
        loginFrom(defaults, `${n}.${host}`, victim.user.email, `guess ${host}.${i}`)))
      codes.push(...batch.map(r => r.statusCode))
    }
    const tally = (code: number) => codes.filter(c => c === code).length
    // 100 counted to the ceiling, the 11th address one more (it had not failed), then refused.
    assert.deepEqual({ 401: tally(401), 429: tally(429) }, { 401: 101, 429: 9 })
    const { rows: [{ failures }] } = await admin.query(
      "SELECT sum(failures)::int AS failures FROM login_failures WHERE email_hash = sha256(convert_to($1, 'UTF8'))", [victim.user.email])
    assert.equal(failures, 101)

    const owner = await loginFrom(defaults, `${n}.250`, victim.user.email)
    assert.equal(owner.statusCode, 200, owner.body)
    // The attacker's addresses stay refused, even with the right password.
    assertProblem(await loginFrom(defaults, `${n}.1`, victim.user.email), 429, 'RATE_LIMITED')
  })

test('limited unknown and known emails answer identically: status, code, detail, headers, Retry-After; timing within noise', async () => {
  const known = (await signup(setup)).user.email
  const unknown = uniqueEmail('ghost')
  const n = net()
  const [ipKnown, ipUnknown] = [`${n}.1`, `${n}.2`]
  // Unknown emails are counted too: the same three 401s, then the same refusal.
  for (let i = 0; i < 3; i++) {
    const [k, u] = [await loginFrom(a, ipKnown, known, 'wrong password'), await loginFrom(a, ipUnknown, unknown, 'wrong password')]
    assertProblem(k, 401, 'AUTH_INVALID_CREDENTIALS')
    assertProblem(u, 401, 'AUTH_INVALID_CREDENTIALS')
  }
  const [k, u] = [await loginFrom(a, ipKnown, known), await loginFrom(a, ipUnknown, unknown)]
  const [kb, ub] = [assertProblem(k, 429, 'RATE_LIMITED'), assertProblem(u, 429, 'RATE_LIMITED')]
  assert.equal(kb.detail, ub.detail)
  // Every header, by name and value, but those that differ for any two responses.
  const VOLATILE = new Set(['date', 'content-length', 'x-request-id', 'request-id', 'retry-after', 'x-ratelimit-reset', 'ratelimit'])
  const stable = (h: Record<string, unknown>) => Object.fromEntries(Object.entries(h).filter(([name]) => !VOLATILE.has(name)).sort())
  assert.deepEqual(Object.keys(k.headers).sort(), Object.keys(u.headers).sort(), 'the same header names')
  assert.deepEqual(stable(k.headers), stable(u.headers), 'the same header values')
  assert.ok(Math.abs(Number(k.headers['retry-after']) - Number(u.headers['retry-after'])) <= 1, 'the same Retry-After')
  assert.equal(String(k.body.length), String(u.body.length), 'the same body length')

  // Timing: the refusal is one statement either way. Alternate the two and compare medians
  // against the spread the measurements themselves show.
  const times: Record<'k' | 'u', number[]> = { k: [], u: [] }
  for (let i = 0; i < 40; i++) {
    for (const [kind, ip, email] of [['k', ipKnown, known], ['u', ipUnknown, unknown]] as const) {
      const started = process.hrtime.bigint()
      assert.equal((await loginFrom(a, ip, email)).statusCode, 429)
      times[kind].push(Number(process.hrtime.bigint() - started) / 1e6)
    }
  }
  const q = (xs: number[], p: number) => [...xs].sort((x, y) => x - y)[Math.floor(p * (xs.length - 1))]!
  const [mk, mu] = [q(times.k, 0.5), q(times.u, 0.5)]
  const spread = Math.max(q(times.k, 0.75) - q(times.k, 0.25), q(times.u, 0.75) - q(times.u, 0.25))
  console.log(`# limited login: known median ${mk.toFixed(2)} ms, unknown ${mu.toFixed(2)} ms, IQR ${spread.toFixed(2)} ms`)
  assert.ok(Math.abs(mk - mu) <= 2 * spread + 1,
    `medians ${mk.toFixed(2)} / ${mu.toFixed(2)} ms differ by more than the noise (${spread.toFixed(2)} ms)`)
})

test('a successful login gives back its client\'s failures; a right password with a missing tenant is no failure', async () => {
  const user = await signup(setup)
  const ip = `${net()}.1`
  for (let round = 0; round < 2; round++) {
    for (let i = 0; i < 2; i++) assert.equal((await loginFrom(a, ip, user.user.email, 'wrong password')).statusCode, 401)
    assert.equal((await loginFrom(a, ip, user.user.email)).statusCode, 200, `round ${round}`)
  }
  // A user of two tenants who forgets `tenant` is not refused for it.
  const other = await signup(setup)
  assert.equal((await addMember(setup, other, user.user.email)).statusCode, 201)
  for (let i = 0; i < 4; i++) {
    assertProblem(await loginFrom(a, ip, user.user.email), 400, 'TENANT_REQUIRED')
  }
  const inOther = await postFrom(a, '/api/v1/auth/login', ip, { email: user.user.email, password: PASSWORD, tenant: other.tenant!.slug })
  assert.equal(inOther.statusCode, 200)
})

test('refresh is not a credential guess: bad refresh tokens never limit a login', async () => {
  const user = await signup(setup)
  for (let i = 0; i < 5; i++) {
    assertProblem(await refresh(b, `${user.user.id.replace(/-/g, '')}.${'A'.repeat(43)}`), 401, 'AUTH_INVALID_TOKEN')
  }
  assert.equal((await login(b, { email: user.user.email })).statusCode, 200)
})

/** POST /api/v1/auth/password over real HTTP, from the loopback address `localAddress`. */
function changePasswordFrom (port: number, localAddress: string, token: string, currentPassword: string) {
  return new Promise<{ status: number, retryAfter: string | undefined, code: string | undefined }>((resolve, reject) => {
    const body = JSON.stringify({ currentPassword, newPassword: 'attacker owns this now' })
    const headers = { ...bearer(token), 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }
    const req = http.request({ host: '127.0.0.1', port, localAddress, method: 'POST', path: '/api/v1/auth/password', headers }, (res) => {
      let text = ''
      res.on('data', (chunk: Buffer) => { text += chunk.toString() })
      res.on('end', () => resolve({
        status: res.statusCode!,
        retryAfter: res.headers['retry-after'],
        code: text ? (JSON.parse(text) as { code?: string }).code : undefined
      }))
    })
    req.on('error', reject)
    req.end(body)
  })
}

test(
  'POST /auth/password counts the current password as a login: 40 guesses from 2 rotating addresses with a stolen token: 429, no takeover',
  async () => {
    // Its own replica at the defaults (20 per IP per minute, 10 failures per client), listening
    // for real: the two addresses are real loopback peers (127.0.0.2 and 127.0.0.3).
    const app = await buildTestApp(testConfig(db))
    await app.listen({ host: '127.0.0.1', port: 0 })
    const { port } = app.server.address() as AddressInfo
    const owner = await signup(setup)
    const stolen = (await login(setup, { email: owner.user.email })).json() as SessionEnvelope

    const results = []
    for (let i = 0; i < 40; i++) {
      results.push(await changePasswordFrom(port, i % 2 ? '127.0.0.3' : '127.0.0.2', stolen.accessToken, `guess number ${i}`))
    }
    const statuses = results.map(r => r.status)
    assert.equal(statuses.filter(s => s === 401).length, 20, `10 verified per address: ${statuses.join(' ')}`)
    assert.equal(statuses.filter(s => s === 429).length, 20, 'then 429')
    for (const r of results.filter(r => r.status === 429)) {
      assert.equal(r.code, 'RATE_LIMITED')
      assert.ok(Number(r.retryAfter) > 3500, `Retry-After ${r.retryAfter}`)
    }
    // The right current password now gets the same 429: the account is not taken over.
    const right = await changePasswordFrom(port, '127.0.0.2', stolen.accessToken, PASSWORD)
    assert.equal(right.status, 429)
    assert.equal(await tenantStatus(app, owner), 200, 'the owner\'s other sessions live on')
    // The same counters as login: the attacker's addresses cannot log in to the account either.
    assertProblem(await loginFrom(app, '127.0.0.2', owner.user.email), 429, 'RATE_LIMITED')
    assert.equal((await loginFrom(app, `${net()}.1`, owner.user.email)).statusCode, 200, 'the owner, elsewhere, still can')
  })
