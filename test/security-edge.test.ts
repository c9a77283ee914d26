import assert from 'node:assert/strict'
import net from 'node:net'
import { test } from 'node:test'
import { ConfigError, loadConfig } from '../config.js'
import type { SessionEnvelope } from '../services/accounts.js'
import { adminClient, buildTestApp, createTestDatabase, testConfig } from './support/app.js'
import { addMember, bearer, login, loginOperator, PASSWORD, setTenantLimit, signup, uniqueEmail } from './support/actors.js'
import { startTestRedis } from './support/redis.js'
import { chromiumMissing, launchChromium } from './support/browser.js'

// The edge of the service as an attacker meets it: who the client is (X-Forwarded-For), which
// limiter budget a request spends, one member against its tenant, and the headers of answers.
const db = await createTestDatabase()
const admin = await adminClient(db)
type App = Awaited<ReturnType<typeof buildTestApp>>

const BALANCER = '10.0.0.5'
/** A request as an appending balancer at BALANCER passes it on: the client's own header, then the client's address. */
const viaBalancer = (clientHeader: string | null, client: string) =>
  ({ remoteAddress: BALANCER, headers: { 'x-forwarded-for': clientHeader ? `${clientHeader}, ${client}` : client } })

/** A fresh user made a member of `owner`'s tenant, logged in there. */
async function newMember (app: App, owner: SessionEnvelope): Promise<SessionEnvelope> {
  const email = uniqueEmail('member')
  await signup(app, { email, tenantName: 'Elsewhere' })
  const added = await addMember(app, owner, email)
  assert.equal(added.statusCode, 201, added.body)
  const res = await login(app, { email, tenant: owner.tenant!.id })
  assert.equal(res.statusCode, 200, res.body)
  return res.json() as SessionEnvelope
}

test('TRUST_PROXY: true is refused with the reason and the fix; hop counts and address lists are accepted', () => {
  for (const raw of ['true', 'TRUE', 'yes']) {
    assert.throws(() => loadConfig({ TRUST_PROXY: raw }), (err: unknown) => err instanceof ConfigError && err.variable === 'TRUST_PROXY' &&
      /leftmost X-Forwarded-For entry, which the client writes/.test(err.message) && /TRUST_PROXY=1/.test(err.message) &&
      /CIDR/.test(err.message))
  }
  assert.throws(() => loadConfig({}, { TRUST_PROXY: true as never }), /must not be true/)
  assert.equal(loadConfig({}).TRUST_PROXY, false)
  assert.equal(loadConfig({ TRUST_PROXY: 'false' }).TRUST_PROXY, false)
  assert.equal(loadConfig({ TRUST_PROXY: '0' }).TRUST_PROXY, false)
  assert.equal(loadConfig({ TRUST_PROXY: '1' }).TRUST_PROXY, 1)
  assert.equal(loadConfig({ TRUST_PROXY: '2' }).TRUST_PROXY, 2)
  assert.equal(loadConfig({ TRUST_PROXY: '10.0.0.0/8, 127.0.0.1 ,fd00::/8' }).TRUST_PROXY, '10.0.0.0/8,127.0.0.1,fd00::/8')
  assert.equal(loadConfig({ TRUST_PROXY: 'loopback' }).TRUST_PROXY, 'loopback')
  for (const bad of ['10.0.0.0/33', 'proxy.internal', '10.0.0.1,<script>', '-1', '99']) {
    assert.throws(() => loadConfig({ TRUST_PROXY: bad }), (err: unknown) => err instanceof ConfigError && err.variable === 'TRUST_PROXY',
      bad)
  }
})

for (const trust of [1, `${BALANCER.replace(/\.\d+$/, '.0')}/24`] as const) {
  test(`TRUST_PROXY=${trust} behind an appending balancer: a rotating client-written X-Forwarded-For buys no new budget`, async () => {
    // The per-client failed-password limit (docs/auth.md) would answer first: this is about the per-IP one.
    const app = await buildTestApp(testConfig(db, { TRUST_PROXY: trust, LOGIN_MAX_FAILURES_PER_CLIENT: 1000 }))
    const owner = await signup(app)
    const codes: number[] = []
    for (let i = 1; i <= 30; i++) {
      const res = await app.inject({
        method: 'POST',
        url: '/api/v1/auth/login',
        ...viaBalancer(`198.51.100.${i}`, '192.0.2.10'),
        payload: { email: owner.user.email, password: 'wrong password' }
      })
      codes.push(res.statusCode)
    }
    assert.deepEqual(codes, [...Array(20).fill(401), ...Array(10).fill(429)], 'the per-IP credential limit (20) counts the real client hop')
    // Another client behind the same balancer has a budget of its own.
    const other = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/login',
      ...viaBalancer('192.0.2.10', '192.0.2.11'),
      payload: { email: owner.user.email, password: PASSWORD }
    })
    assert.equal(other.statusCode, 200, other.body)
    const { rows: [row] } = await admin.query(
      "SELECT data FROM audit_log WHERE tenant_id = $1 AND action = 'auth.login' ORDER BY seq DESC LIMIT 1", [owner.tenant!.id])
    assert.equal(row.data.ip, '192.0.2.11', 'the audit row names the hop the balancer saw')
  })
}

test('X-Forwarded-For text that is no address never becomes the client IP: the audit row has the peer address', async () => {
  const app = await buildTestApp(testConfig(db, { TRUST_PROXY: 1 }))
  const owner = await signup(app)
  for (const garbage of ['<script>alert(1)</script>', '198.51.100.7, <script>x</script>', 'fe80::1%<x>', 'tenant:1']) {
    const res = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/login',
      remoteAddress: BALANCER,
      headers: { 'x-forwarded-for': garbage },
      payload: { email: owner.user.email, password: PASSWORD }
    })
    assert.equal(res.statusCode, 200, res.body)
    const { rows: [row] } = await admin.query(
      "SELECT data FROM audit_log WHERE tenant_id = $1 AND action = 'auth.login' ORDER BY seq DESC LIMIT 1", [owner.tenant!.id])
    assert.equal(row.data.ip, BALANCER, `${garbage} is replaced by the peer address`)
    assert.ok(net.isIP(row.data.ip))
  }
})

test('Redis: an IP-ish value of tenant:<victim> or account:<email> spends no other kind of budget', async (t) => {
  const redis = await startTestRedis(t)
  if (!redis) return
  const app = await buildTestApp(testConfig(db, {
    REDIS_URL: redis.url, TRUST_PROXY: 1, RATE_LIMIT_MAX: 100_000, REDIS_COMMAND_TIMEOUT_MS: 2000
  }))
  const operator = await loginOperator(app)
  const victim = await signup(app)
  await setTenantLimit(app, operator, victim.tenant!.id, 20)
  for (const value of [`tenant:${victim.tenant!.id}`, `account:${victim.user.email}`]) {
    for (let i = 0; i < 25; i++) {
      const res = await app.inject({ url: '/api/v1/tenant', headers: { 'x-forwarded-for': value } })
      assert.equal(res.statusCode, 401)
    }
  }
  assert.equal((await app.inject({ url: '/api/v1/tenant', headers: bearer(victim) })).statusCode, 200, 'the tenant budget is untouched')
  assert.equal((await login(app, { email: victim.user.email })).statusCode, 200, 'the account budget is untouched')
  assert.equal(app.limiterHealth.failOpens, 0)
})

for (const withRedis of [false, true]) {
  test(`one member cannot spend more than its share of the tenant budget${withRedis ? ' (Redis, two replicas)' : ''}`, async (t) => {
    const redis = withRedis ? await startTestRedis(t) : null
    if (withRedis && !redis) return
    const config = testConfig(db, {
      ...(redis ? { REDIS_URL: redis.url, REDIS_COMMAND_TIMEOUT_MS: 2000 } : {}),
      TENANT_RATE_LIMIT_USER_SHARE: 40
    })
    const apps = withRedis ? [await buildTestApp(config), await buildTestApp(config)] : [await buildTestApp(config)]
    const app = apps[0]!
    const operator = await loginOperator(app)
    const owner = await signup(app)
    const member = await newMember(app, owner)
    const second = await newMember(app, owner)
    await setTenantLimit(app, operator, owner.tenant!.id, 20)
    const codes: number[] = []
    const read = async (i: number, actor: SessionEnvelope) =>
      (await apps[i % apps.length]!.inject({ url: '/api/v1/tenant', headers: bearer(actor) })).statusCode
    for (let i = 0; i < 30; i++) codes.push(await read(i, member))
    assert.deepEqual(codes, [...Array(8).fill(200), ...Array(22).fill(429)], '40 % of 20')
    const refused = await app.inject({ url: '/api/v1/tenant', headers: bearer(member) })
    assert.match(String(refused.headers['ratelimit-policy']), /"user";q=8;w=60/)
    assert.match(refused.json().detail, /user limit of 8/)
    // The owner still gets its own share (of which adding the two members spent 2), and the
    // member's refused requests spent nothing of the tenant's budget: 8 + 8 admitted, so a
    // second member finds the last 4.
    const ownerCodes: number[] = []
    for (let i = 0; i < 7; i++) ownerCodes.push(await read(i, owner))
    assert.deepEqual(ownerCodes, [...Array(6).fill(200), 429])
    const secondCodes: number[] = []
    for (let i = 0; i < 6; i++) secondCodes.push(await read(i, second))
    assert.deepEqual(secondCodes, [200, 200, 200, 200, 429, 429])
    const spent = await app.inject({ url: '/api/v1/tenant', headers: bearer(second) })
    assert.match(spent.json().detail, /tenant limit of 20/)
  })
}

test('headers: nosniff, no framing, HSTS and a CSP that loads nothing on JSON answers, errors and 404s; no-store on the API', async () => {
  const app = await buildTestApp(testConfig(db))
  const owner = await signup(app)
  const answers = {
    json: await app.inject({ url: '/api/v1/tenant', headers: bearer(owner) }),
    error: await app.inject({ url: '/api/v1/tenant' }),
    notFound: await app.inject({ url: '/api/v1/nowhere' }),
    probe: await app.inject({ url: '/health' })
  }
  assert.equal(answers.json.statusCode, 200)
  for (const [name, res] of Object.entries(answers)) {
    assert.equal(res.headers['x-content-type-options'], 'nosniff', name)
    assert.equal(res.headers['x-frame-options'], 'DENY', name)
    assert.equal(res.headers['content-security-policy'], "default-src 'none';frame-ancestors 'none'", name)
    assert.match(String(res.headers['strict-transport-security']), /^max-age=\d{7,}/, name)
  }
  for (const name of ['json', 'error', 'notFound'] as const) assert.equal(answers[name].headers['cache-control'], 'no-store', name)
  // Every answer carrying tokens: signup, login, refresh.
  const email = uniqueEmail()
  const signedUp = await app.inject({
    method: 'POST', url: '/api/v1/auth/signup', payload: { email, password: PASSWORD, tenantName: 'Cache' }
  })
  const loggedIn = await login(app, { email })
  const refreshed = await app.inject({
    method: 'POST', url: '/api/v1/auth/refresh', payload: { refreshToken: loggedIn.json().refreshToken }
  })
  for (const res of [signedUp, loggedIn, refreshed]) {
    assert.ok(res.statusCode < 300, res.body)
    assert.ok(res.json().accessToken)
    assert.equal(res.headers['cache-control'], 'no-store')
  }
  // A route that says how it may be cached keeps its own word.
  assert.equal((await app.inject('/recorder.js')).headers['cache-control'], 'public, max-age=300')
})

test('401s name the Bearer scheme: no error code without a token, error="invalid_token" for a bad or revoked one', async () => {
  const app = await buildTestApp(testConfig(db))
  const owner = await signup(app)
  const missing = await app.inject({ url: '/api/v1/tenant' })
  assert.equal(missing.statusCode, 401)
  assert.equal(missing.headers['www-authenticate'], 'Bearer')
  const bad = await app.inject({ url: '/api/v1/tenant', headers: { authorization: 'Bearer not-a-token' } })
  assert.equal(bad.statusCode, 401)
  assert.equal(bad.headers['www-authenticate'], 'Bearer error="invalid_token"')
  assert.equal((await app.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(owner) })).statusCode, 204)
  const revoked = await app.inject({ url: '/api/v1/tenant', headers: bearer(owner) })
  assert.equal(revoked.statusCode, 401)
  assert.equal(revoked.headers['www-authenticate'], 'Bearer error="invalid_token"')
  const wrongPassword = await login(app, { email: owner.user.email, password: 'wrong password' })
  assert.equal(wrongPassword.statusCode, 401)
  assert.equal(wrongPassword.headers['www-authenticate'], 'Bearer')
})

test('metrics stay off the public port unless METRICS_PUBLIC asks for them', async () => {
  const enabled = await buildTestApp(testConfig(db, { METRICS_ENABLED: true }))
  assert.equal((await enabled.inject('/metrics')).statusCode, 404)
  const asked = await buildTestApp(testConfig(db, { METRICS_ENABLED: true, METRICS_PUBLIC: true }))
  assert.equal((await asked.inject('/metrics')).statusCode, 200)
})

test('wrong cron secrets: 5 per minute per IP, then 429 even for the right one; another IP and other budgets are untouched', async (t) => {
  for (const redis of [null, await startTestRedis(t)]) {
    const app = await buildTestApp(testConfig(db, {
      ENABLE_INTERNAL_CRON: true,
      CRON_SECRET: 'the right secret',
      ...(redis ? { REDIS_URL: redis.url, REDIS_COMMAND_TIMEOUT_MS: 2000 } : {})
    }))
    const cron = (secret: string, remoteAddress = '203.0.113.50') =>
      app.inject({
        method: 'POST', url: '/api/internal/cron/purge-sessions', remoteAddress, headers: { authorization: `Bearer ${secret}` }
      })
    const codes: number[] = []
    for (let i = 0; i < 7; i++) codes.push((await cron(`guess ${i}`)).statusCode)
    assert.deepEqual(codes, [401, 401, 401, 401, 401, 429, 429], redis ? 'redis' : 'memory')
    const right = await cron('the right secret')
    assert.equal(right.statusCode, 429, 'a spent budget answers before the secret is compared')
    assert.ok(Number(right.headers['retry-after']) > 0)
    assert.match(right.json().detail, /cron limit of 5/)
    assert.equal((await cron('the right secret', '203.0.113.51')).statusCode, 200, 'another address is not refused')
    // The cron budget is a key space of its own: the general per-IP budget of the guesser is intact.
    const general = await app.inject({ url: '/api/v1/tenant', remoteAddress: '203.0.113.50' })
    assert.equal(general.statusCode, 401)
    assert.equal(general.headers['x-ratelimit-remaining'], String(1200 - 9))
  }
})

test('/docs: Swagger UI renders every operation in Chromium under its CSP, with no violation; framing forbidden by header', async (t) => {
  const missing = chromiumMissing()
  if (missing) {
    if (process.env.CI) throw new Error(missing)
    t.skip(missing)
    return
  }
  const app = await buildTestApp(testConfig(db))
  await app.listen({ port: 0, host: '127.0.0.1' })
  const base = `http://127.0.0.1:${(app.server.address() as net.AddressInfo).port}`
  const page0 = await app.inject('/docs/')
  assert.match(String(page0.headers['content-security-policy']), /default-src 'none'.*frame-ancestors 'none'/)
  assert.equal(page0.headers['x-frame-options'], 'DENY')
  const operations = Object.values((await app.inject('/docs/json')).json().paths as Record<string, object>)
    .reduce((n: number, ops) => n + Object.keys(ops).length, 0)

  const browser = await launchChromium()
  t.after(() => browser.close())
  const page = await browser.newPage()
  const violations: string[] = []
  page.on('console', (m) => { if (/Content Security Policy|Refused to/i.test(m.text())) violations.push(m.text()) })
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) =>
      console.error(`Refused to load: CSP ${e.violatedDirective} ${e.blockedURI}`))
  })
  const failed: string[] = []
  page.on('requestfailed', (r) => failed.push(r.url()))
  await page.goto(`${base}/docs/`)
  await page.waitForFunction((n) => document.querySelectorAll('.opblock').length >= n, operations, { timeout: 15_000 })
  assert.equal(await page.locator('.opblock').count(), operations)
  // Opening an operation renders its schemas (the UI's own scripts and styles at work).
  await page.locator('.opblock-summary').first().click()
  await page.waitForSelector('.opblock-body')
  await page.locator('.try-out__btn').first().click()
  await page.waitForSelector('.execute')
  assert.deepEqual(violations, [])
  assert.deepEqual(failed, [])
})
