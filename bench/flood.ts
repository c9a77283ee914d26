// npm run bench:flood — what one tenant flooding at 10× its limit costs the others (see
// docs/reliability.md, floods). Three neighbour tenants read `GET /api/v1/tenant` at a fixed
// total rate; in alternate phases a fourth tenant, whose contract allows FLOOD_LIMIT requests a
// minute, sends ten times that. The figure is the neighbours' p99 in the flood phases over their
// p99 in the quiet phases of the same run (target < 1.2), with the flooder's 429s and the
// neighbours' 0 × 429 checked alongside. Quiet and flood phases alternate so that drift on a
// shared machine lands on both sides. The load runs in a child process (autocannon, its own event
// loop), the service in this one (app.listen). autocannon's overallRate sends each second's
// budget in a burst at the start of the second, and its latency correction assumes 1 ms between
// requests (bench/lib/open-loop.ts): the p99s are a burst's, on both sides of the ratio alike.
//   BENCH_ROUNDS (3) quiet+flood pairs, BENCH_PHASE_S (10), NEIGHBOUR_RATE (150 req/s in all),
//   FLOOD_LIMIT (600 a minute: the free plan's)
import { spawn } from 'node:child_process'
import os from 'node:os'
import { buildApp } from '../app.js'
import { benchDatabase, machine, randomEmail } from './support.js'

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
const PHASE_S = Number(process.env.BENCH_PHASE_S ?? 10)
const NEIGHBOUR_RATE = Number(process.env.NEIGHBOUR_RATE ?? 150)
const FLOOD_LIMIT = Number(process.env.FLOOD_LIMIT ?? 600)
const FLOOD_RATE = Math.round(FLOOD_LIMIT / 60 * 10)
const NEIGHBOURS = 3

const db = await benchDatabase()
// Every request comes from 127.0.0.1: the per-IP limit would stop the load before the tenant limits do.
const app = await buildApp(db.config({ RATE_LIMIT_MAX: 1_000_000_000 }))
await app.listen({ port: 0, host: '127.0.0.1' })
const address = app.server.address()
const url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/api/v1/tenant`

await app.accounts.ensureOperator(db.ownerUrl, 'bench-operator@example.test', 'bench password')
const operatorLogin = { email: 'bench-operator@example.test', password: 'bench password' }
const operator = (await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: operatorLogin })).json() as { accessToken: string }
async function tenantWithLimit (perMinute: number) {
  const signup = await app.inject({
    method: 'POST', url: '/api/v1/auth/signup', payload: { email: randomEmail(), password: 'bench password', tenantName: 'Bench' }
  })
  const t = signup.json() as { accessToken: string, tenant: { id: string } }
  const res = await app.inject({
    method: 'PUT',
    url: `/api/v1/operator/tenants/${t.tenant.id}/contract`,
    headers: { authorization: `Bearer ${operator.accessToken}` },
    payload: {
      features: { api_requests_per_minute: perMinute },
      startsAt: new Date(Date.now() - 60_000).toISOString(),
      endsAt: new Date(Date.now() + 86_400_000).toISOString()
    }
  })
  if (res.statusCode !== 200) throw new Error(res.body)
  return t.accessToken
}
const neighbours = await Promise.all(Array.from({ length: NEIGHBOURS }, () => tenantWithLimit(1_000_000_000)))
const flooder = await tenantWithLimit(FLOOD_LIMIT)

// The child runs one autocannon instance per stream at once and prints each one's figures.
const LOAD = `
const autocannon = require('autocannon')
const streams = JSON.parse(process.argv[1])
Promise.all(streams.map(s => new Promise((resolve, reject) => autocannon({
  url: s.url, connections: s.connections, duration: s.seconds, overallRate: s.rate,
  headers: { authorization: 'Bearer ' + s.token }
}, (err, r) => {
  if (err) return reject(err)
  const s429 = r.statusCodeStats['429']?.count ?? 0
  resolve({
    name: s.name, sent: r.requests.total, ok: r['2xx'], s429,
    other: r.non2xx - s429 + r.errors + r.timeouts, p50: r.latency.p50, p99: r.latency.p99
  })
}))))
  .then(out => process.stdout.write(JSON.stringify(out)))
`
interface Stream { name: string, token: string, rate: number, connections: number }
interface StreamResult { name: string, sent: number, ok: number, s429: number, other: number, p50: number, p99: number }

function load (streams: Stream[], seconds: number): Promise<StreamResult[]> {
  return new Promise((resolve, reject) => {
    const args = ['-e', LOAD, JSON.stringify(streams.map(s => ({ ...s, url, seconds })))]
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (chunk: Buffer) => { out += chunk.toString() })
    child.once('error', reject)
    child.once('exit', (code) => {
      if (code === 0) resolve(JSON.parse(out) as StreamResult[])
      else reject(new Error(`load generator exited with ${code}`))
    })
  })
}

// One autocannon stream per neighbour, so the neighbours' latency is never mixed with the flooder's.
const quiet: Stream[] = neighbours.map((token, i) =>
  ({ name: `neighbour ${i + 1}`, token, rate: Math.round(NEIGHBOUR_RATE / NEIGHBOURS), connections: 10 }))
const flood: Stream[] = [...quiet, { name: 'flooder', token: flooder, rate: FLOOD_RATE, connections: 20 }]
// The neighbours' p99 is that of their worst stream: a slowdown of one of them counts.
const p99 = (rs: StreamResult[]) => Math.max(...rs.filter(r => r.name !== 'flooder').map(r => r.p99))
const p50 = (rs: StreamResult[]) => Math.max(...rs.filter(r => r.name !== 'flooder').map(r => r.p50))

// The warm-up floods too: it spends the flooder's budget for the current window, so that the
// measured floods are mostly refusals, as a sustained flood is (nine in ten).
console.error('warm-up: 8 s of the flood load')
await load(flood, 8)
// CPU time of this process (the service; the load runs in a child) per phase: what a refusal
// costs shows as the flood phases' extra CPU over the flooder's requests, a figure that drifts
// far less with the machine's neighbours than a p99 does. Postgres's share is not counted.
const cpuS = async (phase: () => Promise<StreamResult[]>) => {
  const before = process.cpuUsage()
  const results = await phase()
  const used = process.cpuUsage(before)
  return { results, cpu: (used.user + used.system) / 1e6 }
}
const rounds: Array<{ quiet: StreamResult[], flood: StreamResult[], quietCpu: number, floodCpu: number }> = []
for (let i = 0; i < ROUNDS; i++) {
  const { results: q, cpu: quietCpu } = await cpuS(() => load(quiet, PHASE_S))
  const { results: f, cpu: floodCpu } = await cpuS(() => load(flood, PHASE_S))
  rounds.push({ quiet: q, flood: f, quietCpu, floodCpu })
  console.error(`round ${i + 1}: neighbours' p99 ${p99(q)} ms quiet, ${p99(f)} ms in the flood (${(p99(f) / p99(q)).toFixed(2)}×)`)
}

const ratios = rounds.map(r => p99(r.flood) / p99(r.quiet)).sort((a, b) => a - b)
const median = ratios[Math.floor(ratios.length / 2)]!
const sum = (rs: StreamResult[], pick: (r: StreamResult) => number) => rs.reduce((n, r) => n + pick(r), 0)
const neighbourResults = rounds.flatMap(r => [...r.quiet, ...r.flood.filter(s => s.name !== 'flooder')])
const flooderResults = rounds.map(r => r.flood.find(s => s.name === 'flooder')!)

console.log(`machine: ${machine()}; load average at the end ${os.loadavg().map(l => l.toFixed(1)).join(' / ')}`)
console.log(`${ROUNDS} rounds of ${PHASE_S} s quiet then ${PHASE_S} s flood; ` +
  `neighbours ${NEIGHBOURS} tenants at ${NEIGHBOUR_RATE} req/s in all; ` +
  `flooder limited to ${FLOOD_LIMIT}/min, sending ${FLOOD_RATE} req/s (10×); pool ${app.config.DB_MAX_CONNECTIONS}`)
console.log('| measure | value |\n|---|---|')
console.log(`| neighbours' p99, quiet → flood, per round | ${rounds.map(r => `${p99(r.quiet)} → ${p99(r.flood)} ms`).join(', ')} |`)
console.log(`| neighbours' p50, quiet → flood, per round | ${rounds.map(r => `${p50(r.quiet)} → ${p50(r.flood)} ms`).join(', ')} |`)
const verdict = median < 1.2 ? '(met)' : '(MISSED)'
console.log(`| p99 ratio flood / quiet (median of ${ROUNDS}; target < 1.20) | ${median.toFixed(2)} ${verdict} |`)
const counts = (rs: StreamResult[]) => [sum(rs, r => r.sent), sum(rs, r => r.ok), sum(rs, r => r.s429), sum(rs, r => r.other)].join(', ')
console.log(`| neighbours: requests, 2xx, 429, other failures | ${counts(neighbourResults)} |`)
console.log(`| flooder: requests, 2xx, 429, other failures | ${counts(flooderResults)} |`)
// Per request: the quiet phases' CPU over their requests; a refusal: the flood phases' extra
// CPU (over what their neighbour requests cost at the quiet rate) over the flooder's 429s.
const quietCpu = rounds.reduce((n, r) => n + r.quietCpu, 0)
const quietRequests = rounds.reduce((n, r) => n + sum(r.quiet, x => x.sent), 0)
const perRequestUs = quietCpu / quietRequests * 1e6
const extra = rounds.reduce((n, r) => n + r.floodCpu - sum(r.flood.filter(x => x.name !== 'flooder'), x => x.sent) * perRequestUs / 1e6, 0)
const refusals = sum(flooderResults, r => r.s429)
const perServedFlood = sum(flooderResults, r => r.ok) * perRequestUs / 1e6
console.log('| service CPU per neighbour request (quiet) / per refusal (flood, served ones at the same cost) | ' +
  `${Math.round(perRequestUs)} / ${Math.round((extra - perServedFlood) / refusals * 1e6)} µs |`)
const neighbour429 = sum(neighbourResults, r => r.s429)
const served = sum(flooderResults, r => r.ok)
const elapsedMin = ROUNDS * PHASE_S * 2 / 60
await app.close()
await db.stop()
// The counts are correctness, not timing: they fail the run.
if (neighbour429 > 0) throw new Error(`the neighbours got ${neighbour429} × 429`)
if (served > FLOOD_LIMIT * (Math.ceil(elapsedMin) + 1)) throw new Error(`the flooder was served ${served} requests, over its limit`)
