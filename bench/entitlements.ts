// npm run bench:entitlements — cached checks per second in-process, cold check latency, and
// change-to-denied propagation across 3 instances with LISTEN/NOTIFY broadcast.
import { performance } from 'node:perf_hooks'
import { buildApp } from '../app.js'
import { benchDatabase, machine, percentile, randomEmail } from './support.js'

const db = await benchDatabase()
const config = db.config({ ENTITLEMENT_BROADCAST_ENABLED: true })
const apps = [await buildApp(config), await buildApp(config), await buildApp(config)]
await Promise.all(apps.map(a => a.ready()))
const [a, b, c] = apps as [typeof apps[0], typeof apps[0], typeof apps[0]]
while (!apps.every(x => x.entitlementBroadcast?.connected)) await new Promise(resolve => setTimeout(resolve, 20))

const signup = await a.inject({ method: 'POST', url: '/api/v1/auth/signup', payload: { email: randomEmail(), password: 'bench password', tenantName: 'Bench' } })
const tenantId = signup.json().tenant.id as string
await a.accounts.ensureOperator('bench-operator@example.test', 'bench password')
const op = (await a.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: 'bench-operator@example.test', password: 'bench password' } })).json()
const setPlan = (plan: string) => a.inject({ method: 'PUT', url: `/api/v1/operator/tenants/${tenantId}/plan`, headers: { authorization: `Bearer ${op.accessToken}` }, payload: { plan } })

// 1. Cached checks in-process.
const engine = a.entitlements
await engine.check(tenantId, 'seats')
const N = 5_000_000
let t0 = performance.now()
for (let i = 0; i < N; i++) await engine.check(tenantId, 'seats')
const cachedPerSec = N / ((performance.now() - t0) / 1000)

// 2. Cold checks (cache dropped before each): one query under the tenant's RLS.
const cold: number[] = []
for (let i = 0; i < 1000; i++) {
  engine.invalidate(tenantId)
  t0 = performance.now()
  await engine.check(tenantId, 'seats')
  cold.push(performance.now() - t0)
}
cold.sort((x, y) => x - y)

// 3. Propagation: from the operator's request on A to the invalidation on B and C.
const propagation: number[] = []
for (let i = 0; i < 100; i++) {
  const seen = [b, c].map(x => new Promise<number>(resolve => x.entitlements.events.once('entitlement.changed', () => resolve(performance.now()))))
  const start = performance.now()
  const res = await setPlan(i % 2 ? 'pro' : 'free')
  if (res.statusCode !== 200) throw new Error(res.body)
  for (const at of await Promise.all(seen)) propagation.push(at - start)
}
propagation.sort((x, y) => x - y)

console.log(`machine: ${machine()}`)
console.log('| measure | value |\n|---|---|')
console.log(`| cached check, in-process | ${(cachedPerSec / 1e6).toFixed(1)} M/s |`)
console.log(`| cold check (1 query) p50 / p99 | ${percentile(cold, 50).toFixed(2)} / ${percentile(cold, 99).toFixed(2)} ms |`)
console.log(`| change → invalidated on B and C (incl. the operator request) p50 / p99 | ${percentile(propagation, 50).toFixed(1)} / ${percentile(propagation, 99).toFixed(1)} ms |`)
await Promise.all(apps.map(x => x.close()))
await db.stop()
