import assert from 'node:assert/strict'
import { test } from 'node:test'
import { buildTestApp, captureLogs, createTestDatabase, testConfig, waitFor } from './support/app.js'
import { bearer, loginOperator, setTenantLimit, signup } from './support/actors.js'
import { startTestRedis } from './support/redis.js'

const db = await createTestDatabase()

test('global per-IP limit: exact count, 429 problem+json with Retry-After and draft headers; probes exempt; 404s count', async () => {
  const app = await buildTestApp(testConfig(db, { RATE_LIMIT_MAX: 5, RATE_LIMIT_WINDOW: 60_000 }))
  for (let i = 0; i < 30; i++) assert.equal((await app.inject('/health')).statusCode, 200)
  for (let i = 0; i < 3; i++) assert.equal((await app.inject('/no-such-route')).statusCode, 404)
  const ok = await app.inject('/api/v1/tenant') // 401, but counted: the limit runs before auth
  assert.equal(ok.statusCode, 401)
  assert.equal(ok.headers['x-ratelimit-limit'], '5')
  assert.equal(ok.headers['x-ratelimit-remaining'], '1')
  assert.equal(ok.headers['ratelimit-policy'], '"ip";q=5;w=60')
  assert.match(String(ok.headers.ratelimit), /^"ip";r=1;t=\d+$/)
  assert.equal((await app.inject('/api/v1/tenant')).statusCode, 401)
  const limited = await app.inject('/api/v1/tenant')
  assert.equal(limited.statusCode, 429)
  assert.match(String(limited.headers['content-type']), /application\/problem\+json/)
  assert.equal(limited.json().code, 'RATE_LIMITED')
  assert.ok(Number(limited.headers['retry-after']) > 0)
  assert.equal((await app.inject('/no-such-route')).statusCode, 429, '404 floods are limited too')
  assert.equal((await app.inject('/api/v1/health')).statusCode, 200, 'readiness is never limited')
})

test('window boundary: exactly max per window, and a fresh window after it', async () => {
  const app = await buildTestApp(testConfig(db, { RATE_LIMIT_MAX: 3, RATE_LIMIT_WINDOW: 1000 }))
  const burst = async () => {
    const codes = []
    for (let i = 0; i < 5; i++) codes.push((await app.inject('/nowhere')).statusCode)
    return codes
  }
  assert.deepEqual(await burst(), [404, 404, 404, 429, 429])
  await waitFor(async () => (await app.inject({ url: '/health' })).statusCode === 200 && (await app.inject('/nowhere')).statusCode === 404,
    { timeoutMs: 3000, what: 'the next window' })
  assert.deepEqual(await burst(), [404, 404, 429, 429, 429], 'the probe above spent one of the new window')
})

test('TRUST_PROXY decides whether X-Forwarded-For names the client', async () => {
  const trusting = await buildTestApp(testConfig(db, { RATE_LIMIT_MAX: 2, TRUST_PROXY: 1 }))
  for (const ip of ['10.0.0.1', '10.0.0.2', '10.0.0.3']) {
    for (let i = 0; i < 2; i++) assert.equal((await trusting.inject({ url: '/x', headers: { 'x-forwarded-for': ip } })).statusCode, 404)
  }
  const wary = await buildTestApp(testConfig(db, { RATE_LIMIT_MAX: 2, TRUST_PROXY: false }))
  const codes = []
  for (const ip of ['10.0.0.1', '10.0.0.2', '10.0.0.3']) {
    codes.push((await wary.inject({ url: '/x', headers: { 'x-forwarded-for': ip } })).statusCode)
  }
  assert.deepEqual(codes, [404, 404, 429], 'a spoofed header does not buy a new budget')
})

test('per-tenant limit from the entitlement: isolation, and a plan change changes the limit', async () => {
  // One user spends the whole budget here; its share of it is test/security-edge.test.ts's.
  const app = await buildTestApp(testConfig(db, { TENANT_RATE_LIMIT_USER_SHARE: 100 }))
  const operator = await loginOperator(app)
  const a = await signup(app)
  const b = await signup(app)
  await setTenantLimit(app, operator, a.tenant!.id, 3)
  const codes = []
  for (let i = 0; i < 5; i++) codes.push((await app.inject({ url: '/api/v1/tenant', headers: bearer(a) })).statusCode)
  assert.deepEqual(codes, [200, 200, 200, 429, 429])
  const limited = await app.inject({ url: '/api/v1/tenant', headers: bearer(a) })
  assert.match(String(limited.headers['ratelimit-policy']), /"tenant";q=3;w=60/)
  assert.match(limited.json().detail, /tenant limit of 3/)
  for (let i = 0; i < 10; i++) {
    assert.equal((await app.inject({ url: '/api/v1/tenant', headers: bearer(b) })).statusCode, 200, 'B is not slowed by A')
  }
  await setTenantLimit(app, operator, a.tenant!.id, 100)
  assert.equal((await app.inject({ url: '/api/v1/tenant', headers: bearer(a) })).statusCode, 200, 'the new limit applies at once')
})

test('Redis: three replicas together admit exactly the limit (300 concurrent against 100)', async (t) => {
  const redis = await startTestRedis(t)
  if (!redis) return
  // This test is about exact counting, not about timeouts: 300 requests at once on a busy CI
  // machine can keep a 100 ms command waiting, and a fail-open would admit one too many.
  const config = testConfig(db, {
    REDIS_URL: redis.url,
    RATE_LIMIT_MAX: 100_000,
    DB_MAX_CONNECTIONS: 10,
    REDIS_COMMAND_TIMEOUT_MS: 2000,
    TENANT_RATE_LIMIT_USER_SHARE: 100
  })
  const apps = [await buildTestApp(config), await buildTestApp(config), await buildTestApp(config)]
  const operator = await loginOperator(apps[0]!)
  const tenant = await signup(apps[0]!)
  await setTenantLimit(apps[0]!, operator, tenant.tenant!.id, 100)
  const results = await Promise.all(Array.from({ length: 300 }, (_, i) =>
    apps[i % 3]!.inject({ url: '/api/v1/tenant', headers: bearer(tenant) }).then(r => r.statusCode)))
  assert.equal(results.filter(c => c === 200).length, 100)
  assert.equal(results.filter(c => c === 429).length, 200)
  for (const app of apps) assert.equal(app.limiterHealth.failOpens, 0)
})

test(
  'Redis down: no request waits on it, general routes fail open (logged once), credential routes use a strict local limit; recovers',
  async (t) => {
    const redis = await startTestRedis(t)
    if (!redis) return
    const logs = captureLogs()
    const app = await buildTestApp(testConfig(db, {
      REDIS_URL: redis.url,
      LOG_LEVEL: 'info',
      RATE_LIMIT_MAX: 1000,
      AUTH_RATE_LIMIT_MAX: 1000,
      AUTH_RATE_LIMIT_FALLBACK_MAX: 3
    }), { logs })
    const tenant = await signup(app)
    assert.equal((await app.inject({ url: '/api/v1/tenant', headers: bearer(tenant) })).statusCode, 200)

    await redis.stop()
    const timings: number[] = []
    for (let i = 0; i < 20; i++) {
      const started = Date.now()
      const res = await app.inject({ url: '/api/v1/tenant', headers: bearer(tenant) })
      timings.push(Date.now() - started)
      assert.equal(res.statusCode, 200, 'fail open, never 5xx')
    }
    // Waiting on Redis would mean a reconnect (seconds) per request; the bound leaves room for a
    // busy CI machine's database round trips, not for a wait on Redis.
    assert.ok(Math.max(...timings) < 1000, `no request waited on Redis (max ${Math.max(...timings)} ms)`)
    assert.ok(app.limiterHealth.failOpens >= 20)
    assert.equal(logs.lines.filter(l => String(l.msg).startsWith('redis unavailable')).length, 1, 'logged once per outage')

    const login = () => app.inject({
      method: 'POST',
      url: '/api/v1/auth/login',
      payload: { email: tenant.user.email, password: 'wrong password!' }
    }).then(r => r.statusCode)
    const codes = [await login(), await login(), await login(), await login()]
    assert.deepEqual(codes, [401, 401, 401, 429], 'strict per-process fallback on credential routes')

    await redis.start()
    await waitFor(async () => {
      await app.inject({ url: '/api/v1/tenant', headers: bearer(tenant) })
      return app.limiterHealth.redisUp
    }, { timeoutMs: 5000, what: 'recovery after Redis returns' })
    const failOpens = app.limiterHealth.failOpens
    assert.equal((await app.inject({ url: '/api/v1/tenant', headers: bearer(tenant) })).statusCode, 200)
    assert.equal(app.limiterHealth.failOpens, failOpens, 'decisions are taken by Redis again')
  })

test('shutdown closes the Redis client before the pool', async (t) => {
  const redis = await startTestRedis(t)
  if (!redis) return
  const logs = captureLogs()
  const app = await buildTestApp(testConfig(db, { REDIS_URL: redis.url, LOG_LEVEL: 'info' }), { logs, autoClose: false })
  await app.close()
  assert.deepEqual(logs.lines.filter(l => typeof l.closed === 'string').map(l => l.closed), ['scheduler', 'redis', 'readiness', 'db'])
})
