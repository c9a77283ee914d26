// npm run bench:entitlements: cached checks per second in-process, cold check latency, and
// change-to-denied propagation across 3 instances with LISTEN/NOTIFY broadcast (the same
// measure npm run bench takes, on its own database).
import { entitlementBench } from './lib/inprocess.js'
import { benchDatabase, machine } from './support.js'

const db = await benchDatabase()
const r = await entitlementBench(db, { checks: 5_000_000, propagations: 100 })
console.log(`machine: ${machine()}`)
console.log('| measure | value |\n|---|---|')
console.log(`| cached check, in-process | ${(r.cachedChecksPerS / 1e6).toFixed(1)} M/s |`)
console.log(`| cold check (1 query) p50 / p99 | ${r.coldCheckP50Ms.toFixed(2)} / ${r.coldCheckP99Ms.toFixed(2)} ms |`)
console.log('| change → invalidated on B and C (incl. the operator request) p50 / p99 | ' +
  `${r.propagationP50Ms.toFixed(1)} / ${r.propagationP99Ms.toFixed(1)} ms |`)
await db.stop()
