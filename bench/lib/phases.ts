// The runner's phases over the table of targets in bench/run.ts: the service seeded, then the
// compared targets in interleaved rounds, the open-loop rates, and the targets measured once.
import { randomUUID } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import type { BenchOptions } from './cli.js'
import { ensureOperator } from './inprocess.js'
import { closedLoop, type LoadSpec } from './load.js'
import { interleave, sample, summarise, warmUp, type Runnable, type Warmup } from './measure.js'
import { openLoop } from './open-loop.js'
import type { TargetResult } from './report.js'
import { refreshTokens, seed, type Seed } from './seed.js'
import type { Server, Stack } from './stack.js'

export interface Ctx {
  opts: BenchOptions
  stack: Stack
  /** The service every target without a server of its own is measured on. */
  main: Server
  data: Seed
  /** Fresh refresh tokens: the login target's sessions add to them, the refresh target spends them. */
  refreshPool: string[]
  skipped: Record<string, string>
  log: (msg: string) => void
}

export interface Target {
  name: string
  /**
   * rounds: measured in interleaved rounds with every other such target (their ratios come from
   * the same rounds); open: a fixed arrival rate, a fraction of another target's req/s; once: one
   * measured run after the warm-up.
   */
  phase: 'rounds' | 'open' | 'once'
  /** The server it is measured on (the main service unless it needs another). */
  start?: (ctx: Ctx) => Promise<Server>
  /** Its load, or why it cannot be measured here. */
  load: (ctx: Ctx, server: Server) => LoadSpec | Promise<LoadSpec | { skip: string }>
  /** The targets it is compared with: a ratio `name / other` each. */
  vs?: string[]
  /** Open loop: the fraction of `of`'s measured req/s to send. */
  rate?: { of: string, fraction: number }
  connections?: (o: BenchOptions) => number
  durationS?: (o: BenchOptions) => number
  warmupS?: (o: BenchOptions) => number
  /** One warm-up round instead of rounds until steady. */
  singleWarmup?: boolean
  note?: string
  /** Adds derived figures to the result (events/s). */
  finish?: (r: TargetResult) => void
}

/**
 * The targets --only/--quick select: an open-loop target goes with the target it takes its rate
 * from, both ways (--only tenant-read measures the tenant read's open-loop rates too).
 */
export function select (targets: Target[], opts: BenchOptions): Target[] {
  const chosen = new Set(targets.filter(t => opts.wanted(t.name) || (t.rate && opts.wanted(t.rate.of))).map(t => t.name))
  for (const t of targets) if (chosen.has(t.name) && t.rate) chosen.add(t.rate.of)
  return targets.filter(t => chosen.has(t.name))
}

export interface SeedPlan { refresh: boolean, tenants: number, members: number, skipped: Record<string, string> }

/** The main service, the operator, and the tenants through the service's API; then the pinning. */
export async function setUp (opts: BenchOptions, stack: Stack, want: SeedPlan, log: Ctx['log']) {
  log('starting the service')
  const main = await stack.startService('service', {}, true)
  const operatorEmail = `bench-operator-${randomUUID().slice(0, 8)}@example.test`
  await ensureOperator(stack.db, operatorEmail)
  log(`seeding ${want.tenants} tenants × ${want.members} members (signups: argon2 each)`)
  const t0 = performance.now()
  const data = await seed({ base: main.base, operatorEmail, tenants: want.tenants, membersPerTenant: want.members })
  // The refresh load spends one token per request; it starts from one session per connection.
  const refreshPool = want.refresh ? await refreshTokens(main.base, data.tenants, opts.connections + 10) : []
  log(`seeded in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
  stack.pinAll(main.child.pid)
  return { opts, stack, main, data, refreshPool, skipped: want.skipped, log } satisfies Ctx
}

async function prepare (ctx: Ctx, t: Target, results: TargetResult[]): Promise<Runnable | null> {
  const server = t.start ? await t.start(ctx) : ctx.main
  const spec = await t.load(ctx, server)
  if ('skip' in spec) {
    ctx.skipped[t.name] = spec.skip
    ctx.log(`${t.name} skipped: ${spec.skip}`)
    if (server !== ctx.main) await server.child.stop()
    return null
  }
  const connections = t.connections?.(ctx.opts) ?? ctx.opts.connections
  if (!t.rate) return { name: t.name, server, drive: d => closedLoop(spec, connections, d), afterRun: spec.afterRun }
  const max = results.find(r => r.name === t.rate!.of)?.rps
  if (max === undefined || !(max > 0)) {
    ctx.skipped[t.name] = `${t.rate.of} was not measured`
    return null
  }
  // Enough connections that the rate never waits for one, unless the server falls far behind.
  const rate = Math.max(1, Math.round(max * t.rate.fraction))
  return { name: t.name, server, drive: d => openLoop(spec, { rate, durationS: d, maxSockets: 4 * connections }), afterRun: spec.afterRun }
}

async function stopOwn (ctx: Ctx, runs: Runnable[]) {
  for (const r of runs) if (r.server !== ctx.main) await r.server.child.stop()
}

/** Starts every target of the phase, warms each up, runs the rounds, stops the servers it started. */
export async function runRounds (ctx: Ctx, targets: Target[], results: TargetResult[]) {
  const { opts, log } = ctx
  const ready: Array<{ t: Target, r: Runnable }> = []
  try {
    for (const t of targets) {
      const r = await prepare(ctx, t, results)
      if (r) ready.push({ t, r })
    }
    if (ready.length === 0) return
    const open = targets.some(t => t.rate)
    const load = open ? `fixed arrival rates, up to ${4 * opts.connections} connections` : `${opts.connections} connections`
    log(`${ready.map(x => x.t.name).join(', ')}: ${opts.rounds} interleaved rounds of ${opts.durationS} s (${load}), ` +
      `each after ${opts.primeS} s untimed`)
    // The open-loop targets run on the service the rounds before them have just warmed.
    const warm = new Map<string, Warmup>()
    if (!open) {
      log(`warm-up: rounds of ${opts.warmupS} s until two in a row agree`)
      for (const { t, r } of ready) warm.set(t.name, await warmUp(r, t.warmupS?.(opts) ?? opts.warmupS, log, t.singleWarmup))
    }
    const samples = await interleave(ctx.stack, ready.map(x => x.r), opts, log)
    for (const { t } of ready) {
      const warmup = warm.get(t.name)
      const result = summarise(t.name, samples.get(t.name)!, { ...(warmup ? { warmup } : {}), ...note(t) })
      t.finish?.(result)
      results.push(result)
    }
  } finally {
    await stopOwn(ctx, ready.map(x => x.r))
  }
}

/** One warm-up (to steady, as above) and one measured run per target, one after another. */
export async function runOnce (ctx: Ctx, targets: Target[], results: TargetResult[]) {
  for (const t of targets) {
    const r = await prepare(ctx, t, results)
    if (!r) continue
    try {
      const duration = t.durationS?.(ctx.opts) ?? ctx.opts.durationS
      ctx.log(`measuring ${t.name} (${t.connections?.(ctx.opts) ?? ctx.opts.connections} connections, ${duration} s)`)
      const warmup = await warmUp(r, t.warmupS?.(ctx.opts) ?? ctx.opts.warmupS, ctx.log, t.singleWarmup)
      const result = summarise(t.name, [await sample(ctx.stack, r, duration, ctx.log)], { warmup, ...note(t) })
      t.finish?.(result)
      results.push(result)
    } finally {
      await stopOwn(ctx, [r])
    }
  }
}

function note (t: Target): Partial<TargetResult> {
  return t.note ? { note: t.note } : {}
}
