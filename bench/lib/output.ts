// bench/results.json and the printed report of one run.
import { renameSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { machine } from '../support.js'
import { ROOT } from './build.js'
import type { RunFigures } from './checks.js'
import type { BenchOptions } from './cli.js'
import { WARMUP } from './measure.js'
import type { Ratio } from './ratios.js'
import { checkTable, detailTable, fmt, ratioTable, table, type Check, type TargetResult } from './report.js'
import type { Stack } from './stack.js'
import { round1 } from './stats.js'

export interface Run extends RunFigures {
  limiterCostUs: Record<string, number>
  checks: Check[]
}

const finite = (o: Record<string, number>, digits: number) =>
  Object.fromEntries(Object.entries(o).filter(([, v]) => Number.isFinite(v)).map(([k, v]) => [k, Number(v.toFixed(digits))]))
const pair = (r: [number, number], digits = 1) => r.map(v => Number(v.toFixed(digits))) as [number, number]

function targetJson (t: TargetResult) {
  const opt = (v: number | undefined, f: (n: number) => number = round1) => v !== undefined && Number.isFinite(v) ? f(v) : undefined
  return {
    ...t,
    rps: round1(t.rps),
    p50Ms: round1(t.p50Ms),
    p99Ms: round1(t.p99Ms),
    durationS: Number(t.durationS.toFixed(2)),
    eventsPerS: opt(t.eventsPerS),
    rssPeakMiB: opt(t.rssPeakMiB),
    cpuUsPerReq: opt(t.cpuUsPerReq),
    appCpuUsPerReq: opt(t.appCpuUsPerReq),
    serverCpuCores: opt(t.serverCpuCores, n => Number(n.toFixed(2))),
    otherLoadPct: opt(t.otherLoadPct),
    rpsRounds: t.rpsRounds?.map(Math.round),
    cpuUsRounds: t.cpuUsRounds?.map(Math.round),
    spread: t.spread && {
      rps: pair(t.spread.rps, 0),
      p50Ms: pair(t.spread.p50Ms),
      p99Ms: pair(t.spread.p99Ms),
      cpuUsPerReq: pair(t.spread.cpuUsPerReq),
      appCpuUsPerReq: pair(t.spread.appCpuUsPerReq)
    }
  }
}

const values = (rs: Record<string, Ratio>) => finite(Object.fromEntries(Object.entries(rs).map(([k, r]) => [k, r.value])), 3)
const spreads = (rs: Record<string, Ratio>) => Object.fromEntries(Object.entries(rs).map(([k, r]) => [k, pair(r.spread, 3)]))
const rounds = (rs: Record<string, Ratio>) =>
  Object.fromEntries(Object.entries(rs).map(([k, r]) => [k, r.rounds.map(v => Number(v.toFixed(3)))]))

export function writeReport (opts: BenchOptions, stack: Stack, loadBefore: number[], run: Run, tenants: number, rowsPerRead: number) {
  const report = {
    machine: machine(),
    postgres: stack.postgres,
    loadAverageBefore: loadBefore.map(l => Number(l.toFixed(2))),
    command: opts.command,
    pinned: stack.pinned,
    pinning: stack.pinning,
    connections: opts.connections,
    durationS: opts.durationS,
    warmupS: opts.warmupS,
    warmupRule: { tolerancePct: WARMUP.tolerance * 100, maxRounds: WARMUP.maxRounds },
    primeS: opts.primeS,
    dbMaxConnections: opts.dbMax,
    rounds: opts.rounds,
    tenants,
    rowsPerRead,
    startedAt: new Date(Date.now() - performance.now()).toISOString(),
    targets: run.results.map(targetJson),
    // The medians of the per-round ratios; their [min, max] and each round's beside them.
    ratios: values(run.ratios),
    cpuRatios: values(run.cpuRatios),
    ratioSpread: spreads(run.ratios),
    cpuRatioSpread: spreads(run.cpuRatios),
    ratioRounds: rounds(run.ratios),
    cpuRatioRounds: rounds(run.cpuRatios),
    limiterCostUs: finite(run.limiterCostUs, 1),
    inProcess: run.inProcess,
    memory: run.memory,
    startup: run.startup,
    skipped: run.skipped,
    checks: run.checks
  }
  const out = path.resolve(ROOT, opts.out)
  writeFileSync(out + '.tmp', JSON.stringify(report, null, 2) + '\n')
  renameSync(out + '.tmp', out)
  return out
}

export function printReport (
  opts: BenchOptions, stack: Stack, loadBefore: number[], run: Run, out: string, tenants: number, rowsPerRead: number
) {
  const lines = [
    `machine: ${machine()}; ${stack.postgres}; load average before the run ${loadBefore.map(l => l.toFixed(2)).join(' ')}`,
    `command: ${opts.command}`,
    `pinning: ${stack.pinning}`,
    `load: ${opts.connections} connections; ${opts.rounds} interleaved rounds of ${opts.durationS} s per target, each after ` +
      `${opts.primeS} s untimed; warm-up rounds of ${opts.warmupS} s until two agree within ${WARMUP.tolerance * 100} % req/s ` +
      `(at most ${WARMUP.maxRounds})`,
    `DB_MAX_CONNECTIONS ${opts.dbMax}; ${tenants} tenants, ${rowsPerRead} rows per read; figures are medians over the rounds, ` +
      'min–max their spread',
    '',
    table(run.results),
    '',
    detailTable(run.results),
    '',
    'ratios: the median of the per-round ratios (round i of one over round i of the other), min–max over the rounds',
    '',
    ratioTable(run.ratios, run.cpuRatios),
    ''
  ]
  const costs = Object.entries(run.limiterCostUs).filter(([, v]) => Number.isFinite(v))
  if (costs.length) {
    const list = costs.map(([k, v]) => `${k}: ${v.toFixed(1)}`).join('; ')
    lines.push(`limiter cost per request (difference in server-side CPU, µs): ${list}`, '')
  }
  const e = run.inProcess.entitlements
  if (e) {
    lines.push(`entitlements in-process: cached check ${(e.cachedChecksPerS / 1e6).toFixed(1)} M/s; ` +
      `cold check p50 ${e.coldCheckP50Ms.toFixed(2)} ms, p99 ${e.coldCheckP99Ms.toFixed(2)} ms; ` +
      `broadcast propagation p50 ${e.propagationP50Ms.toFixed(1)} ms, p99 ${e.propagationP99Ms.toFixed(1)} ms ` +
      `(${e.propagationSamples} samples)`)
  }
  for (const a of run.inProcess.audit ?? []) {
    lines.push(`audit appends, ${a.chains} chain(s): ${Math.round(a.appendsPerS)}/s, p50 ${a.p50Ms.toFixed(1)} ms, ` +
      `p99 ${a.p99Ms.toFixed(1)} ms, chains verify: ${a.verified ?? 'not checked'}`)
  }
  const m = run.memory
  if (m) {
    lines.push(`memory (${m.soakS} s tenant-read at ${m.connections} connections, ${fmt(m.rps)} req/s, metrics on): ` +
      `heap used ${m.heapUsedStartMiB.toFixed(0)} → peak ${m.heapUsedPeakMiB.toFixed(0)} → end ${m.heapUsedEndMiB.toFixed(0)} MiB; ` +
      `heap total peak ${m.heapTotalPeakMiB.toFixed(0)} MiB; RSS peak ${m.rssPeakMiB.toFixed(0)} MiB`)
  }
  const st = run.startup
  if (st) {
    const s = (ms: number | undefined) => ms === undefined ? '?' : (ms / 1000).toFixed(2)
    lines.push(`start to ready: cold (initialises the folder) ${s(st.coldMs)} s; warm ${st.warmMs.map(ms => s(ms) + ' s').join(', ')}`)
    lines.push('  phases (s after spawn: embedded Postgres up / listening / ready): ' +
      st.phases.map(p => `${s(p.embeddedPostgresMs)} / ${s(p.listeningMs)} / ${s(p.readyMs)}`).join('; '))
  }
  for (const [k, v] of Object.entries(run.skipped)) lines.push(`skipped ${k}: ${v}`)
  lines.push('', checkTable(run.checks), '', `written: ${path.relative(ROOT, out)}`)
  process.stdout.write(lines.join('\n') + '\n')
}
