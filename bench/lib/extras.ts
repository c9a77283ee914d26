// The measures that are not a load on one target: audit appends and entitlement checks
// in-process, the service's memory through a longer load, and start-to-ready (which needs the
// main service stopped).
import { auditBench, entitlementBench, type AuditResult, type EntitlementResult } from './inprocess.js'
import type { LoadSpec } from './load.js'
import type { Ctx } from './phases.js'
import type { TargetResult } from './report.js'
import { soak, type MemoryResult } from './soak.js'
import { startToReady, type StartupResult } from './startup.js'

export async function runExtras (ctx: Ctx, results: TargetResult[], soakLoad: (base: string) => LoadSpec) {
  const { opts, stack, log } = ctx
  const inProcess: { entitlements?: EntitlementResult, audit?: AuditResult[] } = {}
  if (opts.wanted('audit')) {
    const seconds = opts.quick ? 1 : 5
    inProcess.audit = []
    for (const chains of [1, 10]) {
      log(`audit appends on ${chains} chain(s), 32 concurrent, ${seconds} s`)
      inProcess.audit.push(await auditBench(stack.db, { chains, seconds, concurrency: 32, poolSize: opts.dbMax }))
    }
  }
  if (opts.wanted('entitlements-inprocess')) {
    log('entitlement checks in-process and broadcast propagation (3 in-process instances)')
    const counts = opts.quick ? { checks: 1_000_000, propagations: 20 } : { checks: 5_000_000, propagations: 100 }
    inProcess.entitlements = await entitlementBench(stack.db, counts)
  }

  let memory: MemoryResult | undefined
  if (opts.wanted('memory') && opts.soakS > 0) {
    const s = await soak(stack, soakLoad, { soakS: opts.soakS, connections: opts.connections }, log)
    memory = s.memory
    results.push(s.result)
  } else if (opts.wanted('memory')) {
    ctx.skipped.memory = 'no soak (--quick or --soak 0); RSS peaks per target are in the table'
  }

  await ctx.main.child.stop()
  let startup: StartupResult | undefined
  if (opts.wanted('startup') && !opts.quick) {
    log('start to ready: one cold start (initialises the folder), then 3 warm starts')
    const env = { ...stack.cleanEnv, NODE_ENV: 'production', LOG_LEVEL: 'warn', HOST: '127.0.0.1' }
    startup = await startToReady({ serverJs: stack.serverJs, env, warmRuns: 3, cpu: stack.cpuServer })
  } else if (opts.wanted('startup')) {
    ctx.skipped.startup = 'not in --quick (the cold start initialises a cluster)'
  }
  return { inProcess, memory, startup }
}
