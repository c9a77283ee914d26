import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { after, test, type TestContext } from 'node:test'
import { bearer, signup } from './support/actors.js'
import { startTestRedis } from './support/redis.js'
import { buildTestApp, createTestDatabase, testConfig } from './support/app.js'

// What Prometheus's own linter says of /metrics (promtool, Debian's package prometheus; .ci/run
// installs it), with every feature off and with every feature on.
const PROMTOOL = '/usr/bin/promtool'
const db = await createTestDatabase()

/** Whether promtool is here; without it the test is skipped, except in CI (CI=true), where it fails. */
function havePromtool (t: TestContext) {
  if (existsSync(PROMTOOL)) return true
  if (process.env.CI) throw new Error(`${PROMTOOL} not found, and CI must run the metrics lint (apt-get install prometheus)`)
  t.skip(`${PROMTOOL} not found: metrics lint skipped (apt-get install prometheus)`)
  return false
}

async function promtool (exposition: string) {
  const child = spawn(PROMTOOL, ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr.on('data', (d: Buffer) => { out += d.toString() })
  child.stdin.end(exposition)
  const code = await new Promise<number | null>(resolve => child.on('exit', resolve))
  return { code, out: out.trim() }
}

async function scrape (overrides: Parameters<typeof testConfig>[1]) {
  const app = await buildTestApp(testConfig(db, { METRICS_ENABLED: true, METRICS_PUBLIC: true, ...overrides }))
  after(() => app.close())
  // Traffic first, so every series has a sample: tenant reads (the second finds its
  // entitlements cached) and a 404.
  const t = await signup(app)
  for (let i = 0; i < 2; i++) assert.equal((await app.inject({ url: '/api/v1/tenant', headers: bearer(t) })).statusCode, 200)
  await app.inject({ url: '/no/such/route' })
  const res = await app.inject({ url: '/metrics' })
  assert.equal(res.statusCode, 200)
  return res.body
}

test('promtool check metrics passes with the optional features off, and nothing of them is exported', async (t) => {
  if (!havePromtool(t)) return
  const body = await scrape({})
  const { code, out } = await promtool(body)
  assert.equal(out, '', 'no finding')
  assert.equal(code, 0, out)
  for (const absent of ['govula_redis_up', 'govula_entitlement_broadcast_connected', 'govula_rate_limit_fail_opens_total']) {
    assert.ok(!body.includes(absent), `${absent} is not exported when its feature is off`)
  }
  // The pool's connections by state, and the waiting clients apart from them.
  assert.match(body, /^govula_db_pool_connections\{state="active"\} \d+$/m)
  assert.match(body, /^govula_db_pool_connections\{state="idle"\} \d+$/m)
  assert.doesNotMatch(body, /govula_db_pool_connections\{state="(total|waiting)"\}/)
  assert.match(body, /^govula_db_pool_waiting_clients \d+$/m)
  // Counts that only grow are counters.
  assert.match(body, /^# TYPE govula_entitlement_cache_hits_total counter$/m)
  assert.match(body, /^govula_entitlement_cache_hits_total [1-9]/m)
})

test('promtool check metrics passes with Redis and the broadcast on, which then export their state', async (t) => {
  if (!havePromtool(t)) return
  const redis = await startTestRedis(t)
  if (!redis) return // skipped: no redis-server (CI fails instead)
  const body = await scrape({ REDIS_URL: redis.url, ENTITLEMENT_BROADCAST_ENABLED: true })
  const { code, out } = await promtool(body)
  assert.equal(out, '', 'no finding')
  assert.equal(code, 0, out)
  assert.match(body, /^govula_redis_up 1$/m)
  assert.match(body, /^# TYPE govula_rate_limit_fail_opens_total counter$/m)
  assert.match(body, /^govula_entitlement_broadcast_connected [01]$/m)
})
