// npx tsx bench/recordings.ts — ingested recording events per second, in batches of 100,
// through the full HTTP path (auth, entitlement gate, validation, budget, one INSERT) against
// app.listen. The load generator is autocannon in a child process (its own event loop), as in
// PERFORMANCE-NOTES.md. Besides events/s it reports the CPU time the server
// process and its Postgres backends spent per event: on a machine shared with other work the
// throughput drifts with the neighbours, the CPU cost much less.
//   BENCH_SECONDS (10) per run, BENCH_RUNS (3), BENCH_CONNECTIONS (16), BENCH_BATCH (100)
import { spawn } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import os from 'node:os'
import pg from 'pg'
import { buildApp } from '../app.js'
import { benchDatabase, machine, randomEmail } from './support.js'

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10)
const RUNS = Number(process.env.BENCH_RUNS ?? 3)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 16)
const BATCH = Number(process.env.BENCH_BATCH ?? 100)

const db = await benchDatabase()
// The per-IP limit would stop a single load generator long before the database does.
const app = await buildApp(db.config({ RATE_LIMIT_MAX: 1_000_000_000 }))
await app.listen({ port: 0, host: '127.0.0.1' })
const address = app.server.address()
const url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/api/v1/recordings/events`

const signup = await app.inject({ method: 'POST', url: '/api/v1/auth/signup', payload: { email: randomEmail(), password: 'bench password', tenantName: 'Bench' } })
const tenant = signup.json() as { accessToken: string, tenant: { id: string } }
await app.accounts.ensureOperator('bench-operator@example.test', 'bench password')
const op = (await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: 'bench-operator@example.test', password: 'bench password' } })).json()
const contract = await app.inject({
  method: 'PUT',
  url: `/api/v1/operator/tenants/${tenant.tenant.id}/contract`,
  headers: { authorization: `Bearer ${op.accessToken}` },
  payload: { features: { recording_mode: true, recording_events_per_minute: 1_000_000_000 }, startsAt: new Date(Date.now() - 60_000).toISOString(), endsAt: new Date(Date.now() + 86_400_000).toISOString() }
})
if (contract.statusCode !== 200) throw new Error(contract.body)

// The load generator, plain JavaScript in a child process: autocannon, with fresh UUIDs in
// every batch (a repeated id would be a cheap duplicate, not an ingest) and a payload the size
// of a typical click (~150 bytes). Events a few milliseconds apart, as a browser sends them.
const LOAD = `
const autocannon = require('autocannon')
const { randomUUID } = require('node:crypto')
const { url, token, connections, batch, seconds } = JSON.parse(process.argv[1])
const body = () => {
  const at = Date.now() - batch
  const events = []
  for (let i = 0; i < batch; i++) events.push({ id: randomUUID(), recordingId: 'bench-' + (i % 10), type: 'click', occurredAt: new Date(at + i).toISOString(), payload: { x: i, y: 2 * i, target: 'button#checkout.primary', path: '/shop/checkout', viewport: [1280, 800] } })
  return JSON.stringify({ events })
}
autocannon({
  url, connections, duration: seconds,
  requests: [{ method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Bearer ' + token }, setupRequest: (req) => ({ ...req, body: body() }) }]
}, (err, r) => {
  if (err) throw err
  process.stdout.write(JSON.stringify({ ok: r['2xx'], failed: r.non2xx + r.errors + r.timeouts, p50: r.latency.p50, p99: r.latency.p99, elapsedS: r.duration }))
})
`

interface LoadResult { ok: number, failed: number, p50: number, p99: number, elapsedS: number }
function load (): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', LOAD, JSON.stringify({ url, token: tenant.accessToken, connections: CONNECTIONS, batch: BATCH, seconds: SECONDS })], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (chunk: Buffer) => { out += chunk.toString() })
    child.once('error', reject)
    child.once('exit', (code) => code === 0 ? resolve(JSON.parse(out) as LoadResult) : reject(new Error(`load generator exited with ${code}`)))
  })
}

// What the table holds is what was acknowledged: counted as the tenant (row-level security).
const owner = new pg.Client({ connectionString: db.ownerUrl })
await owner.connect()
await owner.query("SELECT set_config('app.tenant_id', $1, false)", [tenant.tenant.id])
const storedEvents = async () => Number((await owner.query<{ n: string }>('SELECT count(*) AS n FROM recording_events')).rows[0]!.n)

// CPU seconds of the Postgres backends serving this database (/proc, Linux only).
const dbName = new URL(db.runtimeUrl).pathname.slice(1)
function postgresCpuS () {
  let ticks = 0
  for (const pid of readdirSync('/proc').filter(p => /^\d+$/.test(p))) {
    try {
      if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(` ${dbName} `)) continue
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
      ticks += Number(fields[11]) + Number(fields[12]) // utime, stime
    } catch {}
  }
  return ticks / 100 // USER_HZ
}

interface RunResult extends LoadResult { accepted: number, eventsPerS: number }
const results: RunResult[] = []
const cpu0 = { node: process.cpuUsage(), pg: postgresCpuS() }
for (let i = 0; i < RUNS; i++) {
  const before = await storedEvents()
  const r = await load()
  // Counted from the answers; the table may hold the batches still in flight when autocannon
  // stopped counting (at most one per connection), never fewer.
  const stored = await storedEvents() - before
  const accepted = r.ok * BATCH
  if (stored < accepted || stored > accepted + CONNECTIONS * BATCH) throw new Error(`run ${i + 1}: ${r.ok} batches acknowledged, ${stored} events stored`)
  results.push({ ...r, accepted, eventsPerS: accepted / r.elapsedS })
  console.error(`run ${i + 1}: ${Math.round(accepted / r.elapsedS)} events/s, ${r.failed} failed`)
}
const nodeCpu = process.cpuUsage(cpu0.node)
const cpu = { nodeS: (nodeCpu.user + nodeCpu.system) / 1e6, nodeSystemS: nodeCpu.system / 1e6, pgS: postgresCpuS() - cpu0.pg }
await owner.end()
const accepted = results.reduce((sum, r) => sum + r.accepted, 0)

const median = results.map(r => r.eventsPerS).sort((x, y) => x - y)[Math.floor(results.length / 2)]!
console.log(`machine: ${machine()}`)
console.log(`${RUNS} × ${SECONDS} s, ${CONNECTIONS} connections (autocannon, own process), batches of ${BATCH}, pool ${app.config.DB_MAX_CONNECTIONS}`)
console.log('| measure | value |\n|---|---|')
console.log(`| ingested events/s (median of ${RUNS}) | ${Math.round(median).toLocaleString('en')} |`)
console.log(`| runs | ${results.map(r => Math.round(r.eventsPerS).toLocaleString('en')).join(' / ')} |`)
console.log(`| requests/s (median) | ${Math.round(median / BATCH).toLocaleString('en')} |`)
console.log(`| request latency p50 / p99 (per run) | ${results.map(r => `${r.p50} / ${r.p99}`).join(', ')} ms |`)
const perEventUs = (seconds: number) => (seconds / accepted * 1e6).toFixed(1)
console.log(`| CPU per event: server process (of which kernel) / Postgres backends / together | ${perEventUs(cpu.nodeS)} (${perEventUs(cpu.nodeSystemS)}) / ${perEventUs(cpu.pgS)} / ${perEventUs(cpu.nodeS + cpu.pgS)} µs |`)
console.log(`| events/s that CPU time allows on 2 idle cores (Node and Postgres sharing them) | ${Math.round(2 / ((cpu.nodeS + cpu.pgS) / accepted)).toLocaleString('en')} |`)
console.log(`| load average at the end (other work on the machine) | ${os.loadavg().map(l => l.toFixed(1)).join(' / ')} |`)
console.log(`| failed requests | ${results.reduce((sum, r) => sum + r.failed, 0)} |`)
console.log(`| events acknowledged (all stored; checked against the table after each run) | ${accepted.toLocaleString('en')} |`)
await app.close()
await db.stop()
