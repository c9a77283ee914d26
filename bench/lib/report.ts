// The printed table and the checks against issue 9's targets.

export interface TargetResult {
  name: string
  rps: number
  p50Ms: number
  p99Ms: number
  non2xx: number
  errors: number
  requests: number
  durationS: number
  /** Recording ingest: events per second (rps × batch size). */
  eventsPerS?: number
  /** Peak RSS of the measured process during the measured run, MiB. */
  rssPeakMiB?: number
  /** CPU used by processes that are not the bench's during the measured run, % of all cores. */
  otherLoadPct?: number
  /** Server-side CPU (the server, Postgres, Redis) per answered request, µs. */
  cpuUsPerReq?: number
  /** Of which the measured process itself (service or baseline; the rest is Postgres/Redis). */
  appCpuUsPerReq?: number
  /** Server-side CPU in use during the run, in cores (1.0 = one core busy). */
  serverCpuCores?: number
  /** With --rounds: each round's req/s (rps is their median). */
  rpsRounds?: number[]
  cpuUsRounds?: number[]
  note?: string
}

export interface Check { target: string, value: string, met: boolean | null, by: string }

const fmt = (n: number, digits = 0) => Number.isFinite(n) ? n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : '–'

export function table (targets: TargetResult[]): string {
  const rows = ['| target | req/s | p50 ms | p99 ms | non-2xx | server CPU µs/req (of which the process) | server cores | other load | notes |', '|---|---:|---:|---:|---:|---:|---:|---:|---|']
  for (const t of targets) {
    const notes = [
      t.eventsPerS !== undefined ? `${fmt(t.eventsPerS)} events/s` : '',
      t.rpsRounds ? `rounds: ${t.rpsRounds.map(r => fmt(r)).join(' / ')} req/s` : '',
      t.rssPeakMiB !== undefined ? `RSS peak ${fmt(t.rssPeakMiB)} MiB` : '',
      t.errors ? `${t.errors} connection errors` : '',
      t.note ?? ''
    ].filter(Boolean).join('; ')
    const other = t.otherLoadPct !== undefined ? `${fmt(t.otherLoadPct)} %` : ''
    rows.push(`| ${t.name} | ${fmt(t.rps)} | ${fmt(t.p50Ms, 1)} | ${fmt(t.p99Ms, 1)} | ${t.non2xx} | ${fmt(t.cpuUsPerReq ?? NaN)} (${fmt(t.appCpuUsPerReq ?? NaN)}) | ${fmt(t.serverCpuCores ?? NaN, 2)} | ${other} | ${notes} |`)
  }
  return rows.join('\n')
}

export function ratioTable (ratios: Record<string, number>, byCpu: Record<string, number> = {}): string {
  const rows = ['| ratio | by req/s | by server CPU per request |', '|---|---:|---:|']
  const show = (v: number | undefined) => v !== undefined && Number.isFinite(v) ? v.toFixed(2) + '×' : '–'
  for (const [k, v] of Object.entries(ratios)) rows.push(`| ${k} | ${show(v)} | ${show(byCpu[k])} |`)
  return rows.join('\n')
}

export function checkTable (checks: Check[]): string {
  const rows = ['| issue 9 target | measured | met | by |', '|---|---|---|---|']
  for (const c of checks) rows.push(`| ${c.target} | ${c.value} | ${c.met === null ? 'n/a' : c.met ? 'yes' : '**no**'} | ${c.by} |`)
  return rows.join('\n')
}

/** "at least `want`": met, and by how much it exceeds or falls short, as a percentage. */
export function atLeast (target: string, value: number | undefined, want: number, show: (n: number) => string): Check {
  if (value === undefined || !Number.isFinite(value)) return { target, value: 'not measured', met: null, by: '' }
  const pct = (value / want - 1) * 100
  return { target, value: show(value), met: value >= want, by: `${pct >= 0 ? '+' : ''}${pct.toFixed(0)} %` }
}

/** "at most `want`". */
export function atMost (target: string, value: number | undefined, want: number, show: (n: number) => string): Check {
  if (value === undefined || !Number.isFinite(value)) return { target, value: 'not measured', met: null, by: '' }
  const pct = (value / want - 1) * 100
  return { target, value: show(value), met: value <= want, by: `${pct >= 0 ? '+' : ''}${pct.toFixed(0)} %` }
}
