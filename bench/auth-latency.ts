// npx tsx bench/auth-latency.ts [N]: login and refresh latency (p50 / p99) over N sequential
// requests each (default 200) through app.inject, on a real Postgres (TEST_DATABASE_URL's
// server or an embedded one), with the production argon2 parameters (19 MiB, t=2, p=1).
import { performance } from 'node:perf_hooks'
import { buildApp } from '../app.js'
import { benchDatabase, machine, percentile, randomEmail } from './support.js'

const N = Number(process.argv[2] ?? 200)
const db = await benchDatabase()
// Limits out of the way: this measures the work of a request, not the limiter's answer.
const app = await buildApp(db.config({ AUTH_RATE_LIMIT_MAX: 1_000_000, LOGIN_MAX_FAILURES_PER_HOUR: 1_000_000, RATE_LIMIT_MAX: 1_000_000 }))
await app.ready()
await app.readiness.refresh()

const email = randomEmail()
const password = 'bench password 1'
const signup = await app.inject({ method: 'POST', url: '/api/v1/auth/signup', payload: { email, password, tenantName: 'Bench' } })
if (signup.statusCode !== 201) throw new Error(signup.body)

async function measure (label: string, request: () => Promise<{ statusCode: number, body: string }>) {
  for (let i = 0; i < 10; i++) await request() // warm-up: JIT, pool connections
  const times: number[] = []
  for (let i = 0; i < N; i++) {
    const t0 = performance.now()
    const res = await request()
    times.push(performance.now() - t0)
    if (res.statusCode !== 200) throw new Error(`${label}: ${res.statusCode} ${res.body}`)
  }
  times.sort((a, b) => a - b)
  return { label, p50: percentile(times, 50), p99: percentile(times, 99), max: times[times.length - 1]! }
}

const login = await measure('POST /api/v1/auth/login', () =>
  app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email, password } }))

let refreshToken = signup.json().refreshToken as string
const refresh = await measure('POST /api/v1/auth/refresh', async () => {
  const res = await app.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refreshToken } })
  if (res.statusCode === 200) refreshToken = res.json().refreshToken
  return res
})

let accessToken = signup.json().accessToken as string
accessToken = (await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email, password } })).json().accessToken
const resolve = await measure('GET /api/v1/tenant (bearer lookup + 1 query)', () =>
  app.inject({ url: '/api/v1/tenant', headers: { authorization: `Bearer ${accessToken}` } }))

const postgres = process.env.TEST_DATABASE_URL ? 'TEST_DATABASE_URL' : 'embedded'
console.log(`machine: ${machine()}; ${N} sequential requests each, app.inject, Postgres ${postgres}`)
console.log('| request | p50 | p99 | max |\n|---|---|---|---|')
for (const r of [login, refresh, resolve]) {
  console.log(`| ${r.label} | ${r.p50.toFixed(1)} ms | ${r.p99.toFixed(1)} ms | ${r.max.toFixed(1)} ms |`)
}
await app.close()
await db.stop()
