// npm run bench:audit [-- --seconds 10 --concurrency 32 --rows 1000000]
// (= node --expose-gc --import tsx bench/audit.ts)
// Audit chain throughput against a real Postgres (TEST_DATABASE_URL's server, else an embedded
// one): appends per second on 1 chain and spread over 10 chains (each append its own
// transaction through the runtime pool, as a request would), then verify rows per second
// over one chain of --rows rows, with the heap before and after to show it stays bounded.
import { randomUUID } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import pg from 'pg'
import { verifyChain } from '../services/audit.js'
import { createDatabase } from '../infra/database.js'
import { createContextSigner, loadContextKey } from '../infra/request-context.js'
import { auditBench } from './lib/inprocess.js'
import { benchDatabase, machine } from './support.js'

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    concurrency: { type: 'string', default: '32' },
    pool: { type: 'string', default: '20' },
    rows: { type: 'string', default: '1000000' },
    batch: { type: 'string', default: '2000' }
  }
})
const seconds = Number(args.seconds)
const concurrency = Number(args.concurrency)
const rows = Number(args.rows)
const batchSize = Number(args.batch)

const db = await benchDatabase()
const pool = new pg.Pool({ connectionString: db.runtimeUrl, max: Number(args.pool) })
pool.on('error', () => {})
const app = createDatabase(pool, await loadContextKey(createContextSigner(), db.ownerUrl))

const appendLoad = async (chains: number) => {
  const r = await auditBench(db, { chains, seconds, concurrency, poolSize: Number(args.pool) })
  if (!r.verified) throw new Error(`a chain broke under ${chains}-chain load`)
  return { perSec: r.appendsPerS, p50: r.p50Ms, p99: r.p99Ms }
}
const one = await appendLoad(1)
const ten = await appendLoad(10)

// The long chain, appended through audit_append 200 rows per transaction (the in-database
// append path without a round trip per row).
const tenant = randomUUID()
let t0 = performance.now()
// Row g's entry, a JSON text built in SQL around g: about the size of a real audit entry.
const g = ' || g || '
const bulkEntry = `'{"action":"bulk","actor":{"id":null,"type":"system"},"data":{"i":'${g}',` +
  `"note":"a row of about the size of a real audit entry"},"target":{"id":"'${g}'","type":"thing"}}'`
for (let from = 1; from <= rows; from += 200) {
  await app.withTenant(tenant, c => c.query(
    `SELECT count(audit_append('audit_log', $1, ${bulkEntry}))
       FROM generate_series($2::int, $3::int) g`, [tenant, from, Math.min(from + 199, rows)]))
}
const seedPerSec = rows / ((performance.now() - t0) / 1000)

// Live heap during the walk: after a forced collection every 50 batches (the script runs with
// --expose-gc), so the figure is what verification keeps, not garbage waiting to be collected.
const gc = (globalThis as { gc?: () => void }).gc
gc?.()
const heapBefore = process.memoryUsage().heapUsed
let heapPeak = heapBefore
let batches = 0
t0 = performance.now()
const v = await app.withTenant(tenant, c => verifyChain(c, 'audit_log', tenant, {
  batchSize,
  onBatch: () => {
    if (gc && ++batches % 50 === 0) {
      gc()
      heapPeak = Math.max(heapPeak, process.memoryUsage().heapUsed)
    }
  }
}))
const verifySeconds = (performance.now() - t0) / 1000
if (!v.valid || v.checked !== rows) throw new Error(`verification failed: ${JSON.stringify(v)}`)

const mib = (n: number) => (n / 2 ** 20).toFixed(0)
const version = (await pool.query('SHOW server_version')).rows[0].server_version
console.log(`machine: ${machine()}; Postgres: ${version}; pool ${args.pool}, ${concurrency} concurrent appenders, ${seconds} s each`)
console.log('| measure | value |\n|---|---|')
console.log(`| appends/s, 1 chain | ${one.perSec.toFixed(0)} (p50 ${one.p50.toFixed(1)} ms, p99 ${one.p99.toFixed(1)} ms) |`)
console.log(`| appends/s, 10 chains | ${ten.perSec.toFixed(0)} (p50 ${ten.p50.toFixed(1)} ms, p99 ${ten.p99.toFixed(1)} ms) |`)
console.log(`| in-database bulk append (200 per transaction), 1 chain | ${seedPerSec.toFixed(0)} rows/s |`)
console.log(`| verify ${rows.toLocaleString('en')} rows (batches of ${batchSize}) | ` +
  `${(rows / verifySeconds).toFixed(0)} rows/s (${verifySeconds.toFixed(1)} s) |`)
console.log(gc
  ? `| live heap during verify (after GC every 50 batches): before / max | ${mib(heapBefore)} / ${mib(heapPeak)} MiB |`
  : '| live heap during verify | run with node --expose-gc to measure |')
await pool.end()
await db.stop()
