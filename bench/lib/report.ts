// What a run reports: the result of each target, the printed tables, and the checks against
// the performance targets.
import type { Warmup } from './measure.js'
import type { Ratio } from './ratios.js'

export interface TargetResult {
  name: string
  /** Req/s answered 2xx: the median over the rounds. */
  rps: number
  p50Ms: number
  p99Ms: number
  /** Totals over the rounds. */
  non2xx: number
  errors: number
  timeouts?: number
  requests: number
  durationS: number
  /** Recording ingest: events per second (rps × batch size). */
  eventsPerS?: number
  /** Peak RSS of the measured process during the measured runs, MiB. */
  rssPeakMiB?: number
  /** CPU used by processes that are not the bench's during the measured run, % of all cores. */
  otherLoadPct?: number
  /** Server-side CPU (the server, Postgres, Redis) per answered request, µs. */
  cpuUsPerReq?: number
  /** Of which the measured process itself (service or baseline; the rest is Postgres/Redis). */
  appCpuUsPerReq?: number
  /** Server-side CPU in use during the run, in cores (1.0 = one core busy). */
  serverCpuCores?: number
  /** Measured rounds; rps, p50Ms, p99Ms and the CPU figures are their medians. */
  rounds?: number
  /** Each round's req/s and server CPU per request, in the order run. */
  rpsRounds?: number[]
  cpuUsRounds?: number[]
  /** [min, max] over the rounds. */
  spread?: Record<'rps' | 'p50Ms' | 'p99Ms' | 'cpuUsPerReq' | 'appCpuUsPerReq', [number, number]>
  warmup?: Warmup
  /** Open loop: the arrival rate asked for, and the requests in flight at most. */
  offeredRps?: number
  peakInFlight?: number
  note?: string
}

export interface Check { target: string, value: string, met: boolean | null, by: string }

export const fmt = (n: number | undefined, digits = 0) =>
  n !== undefined && Number.isFinite(n) ? n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : '–'
/** The figures: medians with their min–max over the rounds (none for one round). */
export function table (targets: TargetResult[]): string {
  const rows = [
    '| target | rounds | req/s | min–max | p50 ms | p99 ms | min–max | server CPU µs/req | min–max | of which the process |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|'
  ]
  for (const t of targets) {
    const s = t.spread
    const range = (r: [number, number] | undefined, digits = 0) =>
      r && (t.rounds ?? 1) > 1 && Number.isFinite(r[0]) ? `${fmt(r[0], digits)}–${fmt(r[1], digits)}` : ''
    rows.push(`| ${t.name} | ${t.rounds ?? 1} | ${fmt(t.rps)} | ${range(s?.rps)} | ${fmt(t.p50Ms, 1)} | ${fmt(t.p99Ms, 1)} | ` +
      `${range(s?.p99Ms, 1)} | ${fmt(t.cpuUsPerReq)} | ${range(s?.cpuUsPerReq)} | ${fmt(t.appCpuUsPerReq)} |`)
  }
  return rows.join('\n')
}

/** What else each target saw: failures, the machine's other load, memory, the warm-up, notes. */
export function detailTable (targets: TargetResult[]): string {
  const rows = [
    '| target | non-2xx / errors | server cores | other load | RSS peak MiB | warm-up req/s | notes |',
    '|---|---:|---:|---:|---:|---|---|'
  ]
  for (const t of targets) {
    const w = t.warmup
    const verdict = w?.single ? ' (one round)' : w?.converged ? '' : ' (not steady)'
    const warm = w && w.rps.length ? `${w.rps.map(r => fmt(r)).join(' → ')}${verdict}` : ''
    const notes = [
      t.offeredRps !== undefined ? `offered ${fmt(t.offeredRps)} req/s, up to ${t.peakInFlight} in flight` : '',
      t.eventsPerS !== undefined ? `${fmt(t.eventsPerS)} events/s` : '',
      t.note ?? ''
    ].filter(Boolean).join('; ')
    rows.push(`| ${t.name} | ${t.non2xx} / ${t.errors + (t.timeouts ?? 0)} | ${fmt(t.serverCpuCores, 2)} | ` +
      `${t.otherLoadPct !== undefined ? fmt(t.otherLoadPct) + ' %' : ''} | ${fmt(t.rssPeakMiB)} | ${warm} | ${notes} |`)
  }
  return rows.join('\n')
}

export function ratioTable (ratios: Record<string, Ratio>, byCpu: Record<string, Ratio> = {}): string {
  const rows = ['| ratio | by req/s | min–max | by server CPU per request | min–max |', '|---|---:|---:|---:|---:|']
  const show = (r: Ratio | undefined) => r && Number.isFinite(r.value) ? `${r.value.toFixed(2)}×` : '–'
  const span = (r: Ratio | undefined) => r && Number.isFinite(r.spread[0]) ? `${r.spread[0].toFixed(2)}–${r.spread[1].toFixed(2)}×` : ''
  for (const [k, v] of Object.entries(ratios)) rows.push(`| ${k} | ${show(v)} | ${span(v)} | ${show(byCpu[k])} | ${span(byCpu[k])} |`)
  return rows.join('\n')
}

export function checkTable (checks: Check[]): string {
  const rows = ['| performance target | measured | met | by |', '|---|---|---|---|']
  for (const c of checks) rows.push(`| ${c.target} | ${c.value} | ${c.met === null ? 'n/a' : c.met ? 'yes' : '**no**'} | ${c.by} |`)
  return rows.join('\n')
}

const by = (value: number, want: number) => { const pct = (value / want - 1) * 100; return `${pct >= 0 ? '+' : ''}${pct.toFixed(0)} %` }

/** "at least `want`": met, and by how much it exceeds or falls short, as a percentage. */
export function atLeast (target: string, value: number | undefined, want: number, show: (n: number) => string): Check {
  if (value === undefined || !Number.isFinite(value)) return { target, value: 'not measured', met: null, by: '' }
  return { target, value: show(value), met: value >= want, by: by(value, want) }
}

/** "at most `want`". */
export function atMost (target: string, value: number | undefined, want: number, show: (n: number) => string): Check {
  if (value === undefined || !Number.isFinite(value)) return { target, value: 'not measured', met: null, by: '' }
  return { target, value: show(value), met: value <= want, by: by(value, want) }
}
