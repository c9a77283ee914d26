// Measured runs and how they are combined: a warm-up until two rounds agree, then the compared
// targets in interleaved rounds (so that a busy spell of the machine lands on all of them), each
// reported as the median of its rounds with their spread.
import type { LoadResult } from './load.js'
import { cpuMeter, sampleRss } from './procs.js'
import type { TargetResult } from './report.js'
import type { Server, Stack } from './stack.js'
import { apart, median, spread } from './stats.js'

/** One run of a target's load for `durationS` (closed- or open-loop). */
export type Drive = (durationS: number) => Promise<LoadResult & { offeredRps?: number, peakInFlight?: number }>

export interface Sample extends LoadResult {
  cpuUsPerReq: number
  appCpuUsPerReq: number
  serverCpuCores: number
  rssPeakMiB: number
  /** RSS at the end of the run. */
  rssEndMiB: number
  otherLoadPct: number
  offeredRps?: number
  peakInFlight?: number
}

/** A target ready to run: its server is up, its load is set. */
export interface Runnable {
  name: string
  server: Server
  drive: Drive
  /** After each run (warm-up and measured), before the next. */
  afterRun?: () => Promise<void>
}

export interface Warmup {
  roundS: number
  /** Each warm-up round's req/s. */
  rps: number[]
  /** Whether the last two agreed within `tolerancePct` before `maxRounds` were spent. */
  converged: boolean
  /** One round by design (the target's work outlives each run: see its note). */
  single?: boolean
  tolerancePct: number
  maxRounds: number
}

export const WARMUP = { tolerance: 0.10, maxRounds: 6 }

type Log = (msg: string) => void

/** One measured run, with the server side's CPU, the measured process's RSS and the machine's other load. */
export async function sample (stack: Stack, t: Runnable, durationS: number, log: Log): Promise<Sample> {
  const pid = t.server.child.pid
  const rss = sampleRss(pid)
  const meter = cpuMeter({ app: pid, serverSide: () => stack.serverSide(pid, t.server.redis), ours: stack.ours })
  const r = await t.drive(durationS)
  const cpu = meter.stop()
  const rssStats = rss.stop()
  await t.afterRun?.()
  const served = r.rps * r.durationS
  const s: Sample = {
    ...r,
    // Server-side CPU per answered request (service or baseline + Postgres + Redis): what
    // the work costs, which a busy machine changes far less than it changes req/s.
    cpuUsPerReq: served > 0 ? cpu.serverCpuS / served * 1e6 : NaN,
    appCpuUsPerReq: served > 0 ? cpu.appCpuS / served * 1e6 : NaN,
    serverCpuCores: cpu.serverCpuS / r.durationS,
    rssPeakMiB: rssStats.peak / 2 ** 20,
    rssEndMiB: rssStats.last / 2 ** 20,
    otherLoadPct: cpu.otherLoadPct
  }
  log(`  ${t.name}: ${Math.round(r.rps)} req/s, p50 ${r.p50Ms.toFixed(1)} ms, p99 ${r.p99Ms.toFixed(1)} ms, ` +
    `non-2xx ${r.non2xx}; server CPU ${Math.round(s.cpuUsPerReq)} µs/req on ${s.serverCpuCores.toFixed(2)} cores; ` +
    `other load ${s.otherLoadPct.toFixed(0)} %`)
  if (r.non2xx + r.errors + r.timeouts > 0.01 * r.requests) {
    const codes = Object.entries(r.statusCodes ?? {}).map(([code, n]) => `${n} × ${code}`).join(', ')
    log(`  WARNING: ${t.name}: of ${r.requests} requests ${r.non2xx} non-2xx${codes ? ` (${codes})` : ''}, ` +
      `${r.errors} errors, ${r.timeouts} timeouts`)
  }
  return s
}

/**
 * Warm-up rounds of `roundS` until the last two agree on req/s within WARMUP.tolerance, at most
 * WARMUP.maxRounds; or one round when `single`.
 */
export async function warmUp (t: Runnable, roundS: number, log: Log, single = false): Promise<Warmup> {
  const rps: number[] = []
  let converged = false
  const maxRounds = roundS <= 0 ? 0 : single ? 1 : WARMUP.maxRounds
  for (let i = 0; i < maxRounds && !converged; i++) {
    rps.push((await t.drive(roundS)).rps)
    await t.afterRun?.()
    // Two rounds that answered nothing agree, but are no warm-up.
    converged = rps.length >= 2 && rps.at(-1)! > 0 && apart(rps.at(-1)!, rps.at(-2)!) <= WARMUP.tolerance
  }
  const w: Warmup = { roundS, rps: rps.map(Math.round), converged, tolerancePct: WARMUP.tolerance * 100, maxRounds }
  if (single) w.single = true
  if (roundS > 0) {
    const verdict = single
      ? 'one round'
      : converged ? `steady after ${rps.length} rounds` : `NOT steady after ${rps.length} rounds (measured anyway)`
    log(`  warm-up ${t.name}: ${w.rps.join(' → ')} req/s, ${verdict}`)
  }
  return w
}

/**
 * `rounds` rounds over the targets, forward in odd rounds and backward in even ones (A B, B A,
 * A B): a drift over a round then lands on both sides of a comparison in turn. Each measured run
 * follows an untimed one of `primeS` (pools closed while the others had their turn reopen there).
 */
export async function interleave (stack: Stack, targets: Runnable[], o: { rounds: number, durationS: number, primeS: number }, log: Log) {
  const samples = new Map<string, Sample[]>(targets.map(t => [t.name, []]))
  for (let round = 1; round <= o.rounds; round++) {
    if (o.rounds > 1) log(`round ${round} of ${o.rounds}`)
    for (const t of round % 2 ? targets : [...targets].reverse()) {
      if (o.primeS > 0) {
        await t.drive(o.primeS)
        await t.afterRun?.()
      }
      samples.get(t.name)!.push(await sample(stack, t, o.durationS, log))
    }
  }
  return samples
}

/** A target's figures over its rounds: medians, each with its [min, max]; counts are totals. */
export function summarise (name: string, list: Sample[], extra: Partial<TargetResult> = {}): TargetResult {
  const of = (f: (s: Sample) => number | undefined) => list.map(s => f(s) ?? NaN)
  const total = (f: (s: Sample) => number) => list.reduce((n, s) => n + f(s), 0)
  const last = list.at(-1)
  return {
    name,
    rps: median(of(s => s.rps)),
    p50Ms: median(of(s => s.p50Ms)),
    p99Ms: median(of(s => s.p99Ms)),
    requests: total(s => s.requests),
    non2xx: total(s => s.non2xx),
    errors: total(s => s.errors),
    timeouts: total(s => s.timeouts),
    durationS: total(s => s.durationS),
    cpuUsPerReq: median(of(s => s.cpuUsPerReq)),
    appCpuUsPerReq: median(of(s => s.appCpuUsPerReq)),
    serverCpuCores: median(of(s => s.serverCpuCores)),
    rssPeakMiB: Math.max(...of(s => s.rssPeakMiB)),
    otherLoadPct: median(of(s => s.otherLoadPct)),
    ...(last?.offeredRps !== undefined ? { offeredRps: last.offeredRps, peakInFlight: Math.max(...of(s => s.peakInFlight)) } : {}),
    rounds: list.length,
    rpsRounds: of(s => s.rps),
    cpuUsRounds: of(s => s.cpuUsPerReq),
    spread: {
      rps: spread(of(s => s.rps)),
      p50Ms: spread(of(s => s.p50Ms)),
      p99Ms: spread(of(s => s.p99Ms)),
      cpuUsPerReq: spread(of(s => s.cpuUsPerReq)),
      appCpuUsPerReq: spread(of(s => s.appCpuUsPerReq))
    },
    ...extra
  }
}
