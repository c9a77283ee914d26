// npx tsx bench/recordings.ts — ingested recording events per second, in batches of 100,
// through the full HTTP path (auth, entitlement gate, validation, budget, one INSERT) against
// app.listen. The load generator is autocannon in a child process (its own event loop), as in
// bench/run.ts. Besides events/s it reports the CPU time the server
// process and its Postgres backends spent per event: on a machine shared with other work the
// throughput drifts with the neighbours, the CPU cost much less.
//   BENCH_SECONDS (10) per run, BENCH_RUNS (3), BENCH_CONNECTIONS (16), BENCH_BATCH (100)
// BENCH_MODE=list measures GET /api/v1/recordings instead: its latency with 0 and with
// BENCH_LIST_EVENTS (200,000) stored events over 100 recordings, and another tenant's list latency
// while this one keeps 40 lists in flight (sequential fetches over real HTTP).
import { spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import os from 'node:os'
import { buildApp } from '../app.js'
import { benchDatabase, machine, percentile, randomEmail } from './support.js'

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10)
const RUNS = Number(process.env.BENCH_RUNS ?? 3)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 16)
const BATCH = Number(process.env.BENCH_BATCH ?? 100)
const MODE = process.env.BENCH_MODE ?? 'ingest'
const LIST_EVENTS = Number(process.env.BENCH_LIST_EVENTS ?? 200_000)

const db = await benchDatabase()
// The per-IP limit would stop a single load generator long before the database does.
const app = await buildApp(db.config({ RATE_LIMIT_MAX: 1_000_000_000 }))
await app.listen({ port: 0, host: '127.0.0.1' })
const address = app.server.address()
const url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/api/v1/recordings/events`

const signupAs = (tenantName: string) =>
  app.inject({ method: 'POST', url: '/api/v1/auth/signup', payload: { email: randomEmail(), password: 'bench password', tenantName } })
const signup = await signupAs('Bench')
const tenant = signup.json() as { accessToken: string, tenant: { id: string } }
await app.accounts.ensureOperator(db.ownerUrl, 'bench-operator@example.test', 'bench password')
const operatorLogin = { email: 'bench-operator@example.test', password: 'bench password' }
const op = (await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: operatorLogin })).json()
// A contract term from a minute ago to a day ahead.
const term = () => ({ startsAt: new Date(Date.now() - 60_000).toISOString(), endsAt: new Date(Date.now() + 86_400_000).toISOString() })
const contract = await app.inject({
  method: 'PUT',
  url: `/api/v1/operator/tenants/${tenant.tenant.id}/contract`,
  headers: { authorization: `Bearer ${op.accessToken}` },
  payload: { features: { recording_mode: true, recording_events_per_minute: 1_000_000_000 }, ...term() }
})
if (contract.statusCode !== 200) throw new Error(contract.body)

if (MODE === 'list') {
  const base = url.replace(/\/events$/, '')
  const get = async (token: string) => {
    const started = performance.now()
    const res = await fetch(base, { headers: { authorization: `Bearer ${token}` } })
    await res.arrayBuffer()
    return { ms: performance.now() - started, status: res.status }
  }
  const latency = async (token: string, n: number) => {
    const ms: number[] = []
    let failed = 0
    for (let i = 0; i < n; i++) {
      const r = await get(token)
      if (r.status !== 200) failed++
      ms.push(r.ms)
    }
    ms.sort((x, y) => x - y)
    return `${percentile(ms, 50).toFixed(1)} / ${percentile(ms, 99).toFixed(1)} ms${failed ? ` (${failed} of ${n} not 200)` : ''}`
  }
  const other = (await signupAs('Other')).json() as { accessToken: string, tenant: { id: string } }
  // Neither tenant's request budget may be what limits the figures.
  for (const id of [tenant.tenant.id, other.tenant.id]) {
    const res = await app.inject({
      method: 'PUT',
      url: `/api/v1/operator/tenants/${id}/contract`,
      headers: { authorization: `Bearer ${op.accessToken}` },
      payload: {
        features: { recording_mode: true, recording_events_per_minute: 1_000_000_000, api_requests_per_minute: 1_000_000_000 },
        ...term()
      }
    })
    if (res.statusCode !== 200) throw new Error(res.body)
  }
  // Another tenant's list latency while this tenant keeps 40 lists in flight.
  const contended = async () => {
    const state = { running: true }
    const codes = new Map<number, number>()
    const flood = Promise.all(Array.from({ length: 40 }, async () => {
      while (state.running) { const { status } = await get(tenant.accessToken); codes.set(status, (codes.get(status) ?? 0) + 1) }
    }))
    const figure = await latency(other.accessToken, 100)
    state.running = false
    await flood
    return `${figure} (the flooding tenant's answers: ${[...codes].map(([c, n]) => `${n} × ${c}`).join(', ')})`
  }
  const rows: string[][] = []
  rows.push(['0', await latency(tenant.accessToken, 200), await latency(other.accessToken, 100), await contended()])
  // Seeded through the ingest route: 100 recordings, batches of 500, 4 in flight.
  let next = 0
  const at = Date.now() - LIST_EVENTS
  await Promise.all(Array.from({ length: 4 }, async () => {
    while (next < LIST_EVENTS) {
      const from = next
      next += 500
      const events = Array.from({ length: Math.min(500, LIST_EVENTS - from) }, (_, k) => ({
        id: randomUUID(),
        recordingId: `rec-${(from + k) % 100}`,
        type: 'click',
        occurredAt: new Date(at + from + k).toISOString(),
        payload: { x: k }
      }))
      const headers = { 'content-type': 'application/json', authorization: `Bearer ${tenant.accessToken}` }
      const res = await fetch(url, { method: 'POST', headers, body: JSON.stringify({ events }) })
      if (res.status !== 202) throw new Error(`ingest answered ${res.status}: ${await res.text()}`)
    }
  }))
  rows.push([
    LIST_EVENTS.toLocaleString('en'), await latency(tenant.accessToken, 200), await latency(other.accessToken, 100), await contended()
  ])
  console.log(`machine: ${machine()}; pool ${app.config.DB_MAX_CONNECTIONS}; sequential fetches over HTTP, p50 / p99`)
  console.log('| stored events | list, 100 recordings a page | another tenant\'s list | ' +
    'another tenant\'s list while this one keeps 40 in flight |\n|---|---|---|---|')
  for (const r of rows) console.log(`| ${r.join(' | ')} |`)
  await app.close()
  await db.stop()
  process.exit(0)
}

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
  for (let i = 0; i < batch; i++) {
    events.push({
      id: randomUUID(), recordingId: 'bench-' + (i % 10), type: 'click', occurredAt: new Date(at + i).toISOString(),
      payload: { x: i, y: 2 * i, target: 'button#checkout.primary', path: '/shop/checkout', viewport: [1280, 800] }
    })
  }
  return JSON.stringify({ events })
}
autocannon({
  url, connections, duration: seconds,
  requests: [{
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: 'Bearer ' + token },
    setupRequest: (req) => ({ ...req, body: body() })
  }]
}, (err, r) => {
  if (err) throw err
  const failed = r.non2xx + r.errors + r.timeouts
  process.stdout.write(JSON.stringify({ ok: r['2xx'], failed, p50: r.latency.p50, p99: r.latency.p99, elapsedS: r.duration }))
})
`

interface LoadResult { ok: number, failed: number, p50: number, p99: number, elapsedS: number }
function load (): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const args = { url, token: tenant.accessToken, connections: CONNECTIONS, batch: BATCH, seconds: SECONDS }
    const child = spawn(process.execPath, ['-e', LOAD, JSON.stringify(args)], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (chunk: Buffer) => { out += chunk.toString() })
    child.once('error', reject)
    child.once('exit', (code) => {
      if (code === 0) resolve(JSON.parse(out) as LoadResult)
      else reject(new Error(`load generator exited with ${code}`))
    })
  })
}

// What the table holds is what was acknowledged: counted through the recordings list (one page:
// the load spreads over 10 recordings).
const storedEvents = async () => {
  const res = await app.inject({ url: '/api/v1/recordings', headers: { authorization: `Bearer ${tenant.accessToken}` } })
  return (res.json() as { recordings: Array<{ events: number }> }).recordings.reduce((n, r) => n + r.events, 0)
}

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
  if (stored < accepted || stored > accepted + CONNECTIONS * BATCH) {
    throw new Error(`run ${i + 1}: ${r.ok} batches acknowledged, ${stored} events stored`)
  }
  results.push({ ...r, accepted, eventsPerS: accepted / r.elapsedS })
  console.error(`run ${i + 1}: ${Math.round(accepted / r.elapsedS)} events/s, ${r.failed} failed`)
}
const nodeCpu = process.cpuUsage(cpu0.node)
const cpu = { nodeS: (nodeCpu.user + nodeCpu.system) / 1e6, nodeSystemS: nodeCpu.system / 1e6, pgS: postgresCpuS() - cpu0.pg }
const accepted = results.reduce((sum, r) => sum + r.accepted, 0)

const median = results.map(r => r.eventsPerS).sort((x, y) => x - y)[Math.floor(results.length / 2)]!
console.log(`machine: ${machine()}`)
console.log(`${RUNS} × ${SECONDS} s, ${CONNECTIONS} connections (autocannon, own process), batches of ${BATCH}, ` +
  `pool ${app.config.DB_MAX_CONNECTIONS}`)
console.log('| measure | value |\n|---|---|')
console.log(`| ingested events/s (median of ${RUNS}) | ${Math.round(median).toLocaleString('en')} |`)
console.log(`| runs | ${results.map(r => Math.round(r.eventsPerS).toLocaleString('en')).join(' / ')} |`)
console.log(`| requests/s (median) | ${Math.round(median / BATCH).toLocaleString('en')} |`)
console.log(`| request latency p50 / p99 (per run) | ${results.map(r => `${r.p50} / ${r.p99}`).join(', ')} ms |`)
const perEventUs = (seconds: number) => (seconds / accepted * 1e6).toFixed(1)
console.log('| CPU per event: server process (of which kernel) / Postgres backends / together | ' +
  `${perEventUs(cpu.nodeS)} (${perEventUs(cpu.nodeSystemS)}) / ${perEventUs(cpu.pgS)} / ${perEventUs(cpu.nodeS + cpu.pgS)} µs |`)
const allowed = Math.round(2 / ((cpu.nodeS + cpu.pgS) / accepted))
console.log(`| events/s that CPU time allows on 2 idle cores (Node and Postgres sharing them) | ${allowed.toLocaleString('en')} |`)
console.log(`| load average at the end (other work on the machine) | ${os.loadavg().map(l => l.toFixed(1)).join(' / ')} |`)
console.log(`| failed requests | ${results.reduce((sum, r) => sum + r.failed, 0)} |`)
console.log(`| events acknowledged (all stored; checked against the table after each run) | ${accepted.toLocaleString('en')} |`)
await app.close()
await db.stop()
