// One tenant floods at 10× its limit; the others do not notice. Counts only:
// what the flood does to the neighbours' latency is measured by the bench, not asserted here.
import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import type { SessionEnvelope } from '../services/accounts.js'
import { buildTestApp, createTestDatabase, testConfig } from './support/app.js'
import { bearer, loginOperator, setTenantLimit, signup } from './support/actors.js'
import { startTestRedis } from './support/redis.js'

const db = await createTestDatabase()

type App = Awaited<ReturnType<typeof buildTestApp>>
type Response = Awaited<ReturnType<App['inject']>>

const LIMIT = 30 // the flooder's api_requests_per_minute
const FLOOD = LIMIT * 10
const NEIGHBOUR_REQUESTS = 100
// Every tenant GET counts against api_requests_per_minute.
const ROUTES = ['/api/v1/tenant', '/api/v1/tenant/members', '/api/v1/entitlements', '/api/v1/recordings']

/**
 * In waves (all of a wave at once, every tenant in every wave), the flooder sends FLOOD
 * requests and each neighbour NEIGHBOUR_REQUESTS, spread over `apps` round robin.
 */
async function flood (apps: App[], flooder: SessionEnvelope, neighbours: SessionEnvelope[]) {
  const WAVES = 10
  const results = new Map<SessionEnvelope, Response[]>([[flooder, []], ...neighbours.map(n => [n, []] as [SessionEnvelope, Response[]])])
  let k = 0
  const send = (actor: SessionEnvelope) => {
    const i = k++
    return apps[i % apps.length]!.inject({ url: ROUTES[Math.floor(i / apps.length) % ROUTES.length]!, headers: bearer(actor) })
      .then(r => { results.get(actor)!.push(r) })
  }
  for (let w = 0; w < WAVES; w++) {
    const wave: Array<Promise<void>> = []
    for (let i = 0; i < FLOOD / WAVES; i++) wave.push(send(flooder))
    for (const n of neighbours) for (let i = 0; i < NEIGHBOUR_REQUESTS / WAVES; i++) wave.push(send(n))
    await Promise.all(wave)
  }
  return results
}

const count = (responses: Response[], pred: (r: Response) => boolean) => responses.filter(pred).length

function assertIsolation (results: Map<SessionEnvelope, Response[]>, flooder: SessionEnvelope, neighbours: SessionEnvelope[]) {
  const flood = results.get(flooder)!
  const summary = [...results.values()]
    .map(rs => `${count(rs, r => r.statusCode === 200)}/${count(rs, r => r.statusCode === 429)}/${count(rs, r => r.statusCode >= 500)}`)
  console.log(`# 200/429/5xx: flooder ${summary[0]}, neighbours ${summary.slice(1).join(', ')}`)

  assert.equal(flood.length, FLOOD)
  assert.equal(count(flood, r => r.statusCode === 200), LIMIT, 'the flooder gets exactly its limit')
  assert.equal(count(flood, r => r.statusCode === 429), FLOOD - LIMIT, 'and 429 for the rest')
  for (const r of flood.filter(r => r.statusCode === 429)) {
    assert.match(String(r.headers['content-type']), /^application\/problem\+json/)
    assert.equal(r.json().code, 'RATE_LIMITED')
    assert.match(String(r.headers['ratelimit-policy']), new RegExp(`"tenant";q=${LIMIT};w=60`),
      'limited by its tenant budget, not by the IP')
    assert.ok(Number(r.headers['retry-after']) > 0)
  }
  for (const n of neighbours) {
    const mine = results.get(n)!
    assert.equal(mine.length, NEIGHBOUR_REQUESTS)
    assert.equal(count(mine, r => r.statusCode === 429), 0, 'a neighbour gets no 429')
    assert.equal(count(mine, r => r.statusCode >= 500), 0, 'a neighbour gets no 5xx')
    assert.equal(count(mine, r => r.statusCode === 200), NEIGHBOUR_REQUESTS)
  }
}

async function tenants (app: App) {
  const operator = await loginOperator(app)
  const flooder = await signup(app)
  await setTenantLimit(app, operator, flooder.tenant!.id, LIMIT)
  const neighbours = [await signup(app), await signup(app)]
  // One neighbour on the free plan's own budget (600/min), one with a contract of its own.
  await setTenantLimit(app, operator, neighbours[1]!.tenant!.id, 150)
  return { flooder, neighbours }
}

// Every request comes from 127.0.0.1 here, so the per-IP limit is lifted: the tenant limit is under test.
// One user floods for its tenant here, so the per-user share is set to the whole budget.
const base = { RATE_LIMIT_MAX: 1_000_000, DB_MAX_CONNECTIONS: 10, TENANT_RATE_LIMIT_USER_SHARE: 100 }

test('one process: a tenant flooding at 10× its limit gets exactly its limit, then 429; two neighbours get no 429 and no 5xx', async () => {
  const app = await buildTestApp(testConfig(db, base))
  const { flooder, neighbours } = await tenants(app)
  assertIsolation(await flood([app], flooder, neighbours), flooder, neighbours)
})

test('two replicas sharing Redis: the flood is counted across them and still stops at the flooder', async (t: TestContext) => {
  const redis = await startTestRedis(t)
  if (!redis) return
  // Exact counts, not timeouts, are under test: a long command timeout keeps a busy machine from failing open.
  const config = testConfig(db, { ...base, REDIS_URL: redis.url, REDIS_COMMAND_TIMEOUT_MS: 2000 })
  const apps = [await buildTestApp(config), await buildTestApp(config)]
  const { flooder, neighbours } = await tenants(apps[0]!)
  assertIsolation(await flood(apps, flooder, neighbours), flooder, neighbours)
  for (const app of apps) assert.equal(app.limiterHealth.failOpens, 0, 'every decision was taken by Redis')
})

test(
  'a refused token is refused again without touching the database until its window resets; raising the limit applies at once', async () => {
    const app = await buildTestApp(testConfig(db, base))
    const operator = await loginOperator(app)
    const flooder = await signup(app)
    await setTenantLimit(app, operator, flooder.tenant!.id, 3)
    for (let i = 0; i < 3; i++) assert.equal((await app.inject({ url: '/api/v1/tenant', headers: bearer(flooder) })).statusCode, 200)
    const first = await app.inject({ url: '/api/v1/tenant', headers: bearer(flooder) })
    assert.equal(first.statusCode, 429, 'the window is spent')

    // From now on, refusals cost no connection: the pool is never asked for one.
    let checkouts = 0
    const onAcquire = () => { checkouts++ }
    app.pg.pool.on('acquire', onAcquire)
    const again = await Promise.all(ROUTES.map(url => app.inject({ url, headers: bearer(flooder) })))
    app.pg.pool.off('acquire', onAcquire)
    for (const r of again) {
      assert.equal(r.statusCode, 429, r.body)
      assert.equal(r.json().code, 'RATE_LIMITED')
      assert.match(String(r.headers['ratelimit-policy']), /"tenant";q=3;w=60/)
      assert.match(String(r.headers.ratelimit), /"tenant";r=0;t=\d+/)
      assert.ok(Number(r.headers['retry-after']) >= 1 && Number(r.headers['retry-after']) <= 60)
    }
    assert.equal(checkouts, 0, 'no database work for a remembered refusal')
    // A neighbour is untouched, and a route outside the tenant budget still answers.
    const neighbour = await signup(app)
    assert.equal((await app.inject({ url: '/api/v1/tenant', headers: bearer(neighbour) })).statusCode, 200)
    assert.equal((await app.inject({ url: '/health' })).statusCode, 200)

    // The operator raises the limit: the change event forgets the refusal, and the next request is served.
    await setTenantLimit(app, operator, flooder.tenant!.id, 1000)
    assert.equal((await app.inject({ url: '/api/v1/tenant', headers: bearer(flooder) })).statusCode, 200)
  })
