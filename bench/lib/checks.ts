// The performance targets (docs/performance.md), checked against one run's figures.
import type { AuditResult, EntitlementResult } from './inprocess.js'
import type { Ratio } from './ratios.js'
import { atLeast, atMost, type Check, type TargetResult } from './report.js'
import type { MemoryResult } from './soak.js'
import type { StartupResult } from './startup.js'
import { median } from './stats.js'

export interface RunFigures {
  results: TargetResult[]
  ratios: Record<string, Ratio>
  cpuRatios: Record<string, Ratio>
  inProcess: { entitlements?: EntitlementResult, audit?: AuditResult[] }
  memory: MemoryResult | undefined
  startup: StartupResult | undefined
  skipped: Record<string, string>
  connections: number
}

const span = (r: Ratio | undefined) => r && r.rounds.length > 1 ? ` (${r.spread[0].toFixed(2)}–${r.spread[1].toFixed(2)})` : ''

export function performanceChecks (f: RunFigures): Check[] {
  const target = (name: string) => f.results.find(t => t.name === name)
  // A ratio shown with its spread over the rounds, and the same comparison by CPU per request.
  const ratio = (label: string, key: string, want: number) => {
    const r = f.ratios[key]
    const c = f.cpuRatios[key]
    return atLeast(label, r?.value, want, n => `${n.toFixed(2)}×${span(r)}; by CPU per request ` +
      `${c && Number.isFinite(c.value) ? `${c.value.toFixed(2)}×${span(c)}` : '–'}`)
  }
  const notMeasured = (label: string, why: string | undefined): Check =>
    ({ target: label, value: why ?? 'not measured', met: null, by: '' })
  const tenantRead = target('tenant-read')
  const ingest = target('recording-ingest')
  const audit1 = f.inProcess.audit?.find(a => a.chains === 1)
  const audit10 = f.inProcess.audit?.find(a => a.chains === 10)
  const memory = f.memory
  const warmMedian = f.startup ? median(f.startup.warmMs) : undefined
  const p99 = 'tenant read p99 ≤ 25 ms at 50 connections'
  const ten = 'audit appends: more on ten chains than on one'
  return [
    ratio('tenant read ≥ 1.0× four-round-trip baseline', 'tenant-read / baseline-four-round-trips', 1.0),
    ratio('tenant read ≥ 0.6× one-round-trip baseline', 'tenant-read / baseline-one-round-trip', 0.6),
    f.connections === 50
      ? atMost(p99, tenantRead?.p99Ms, 25, n => `${n} ms${tenantRead?.spread ? ` (${tenantRead.spread.p99Ms.join('–')})` : ''}`)
      : {
          target: p99,
          value: `${tenantRead?.p99Ms ?? '–'} ms at ${f.connections} connections`,
          met: null,
          by: 'run at 50 connections to judge'
        },
    ratio('tenant read ≥ 3× Express', 'tenant-read / express-tenant-read', 3),
    ingest
      ? atLeast('recording ingest ≥ 30,000 events/s', ingest.eventsPerS, 30_000, n => `${Math.round(n)} events/s`)
      : notMeasured('recording ingest ≥ 30,000 events/s', f.skipped['recording-ingest']),
    atLeast('audit appends ≥ 1,000/s on one chain', audit1?.appendsPerS, 1000, n => `${Math.round(n)}/s`),
    audit1 && audit10
      ? {
          target: ten,
          value: `${Math.round(audit10.appendsPerS)}/s vs ${Math.round(audit1.appendsPerS)}/s`,
          met: audit10.appendsPerS > audit1.appendsPerS,
          by: `${((audit10.appendsPerS / audit1.appendsPerS - 1) * 100).toFixed(0)} %`
        }
      : notMeasured(ten, f.skipped.audit),
    atLeast('cached entitlement check ≥ 5 M/s in-process', f.inProcess.entitlements?.cachedChecksPerS, 5e6,
      n => `${(n / 1e6).toFixed(1)} M/s`),
    atMost('broadcast propagation p99 ≤ 100 ms', f.inProcess.entitlements?.propagationP99Ms, 100, n => `${n.toFixed(1)} ms`),
    memory
      ? atMost(`heap < 150 MB through a ${memory.soakS} s load at ${memory.connections} connections`,
        memory.heapUsedPeakMiB * 2 ** 20 / 1e6, 150,
        n => `${n.toFixed(0)} MB peak used (RSS peak ${(memory.rssPeakMiB * 2 ** 20 / 1e6).toFixed(0)} MB)`)
      : notMeasured('heap < 150 MB through a 60 s load', f.skipped.memory),
    atMost('start to ready on a warm embedded folder ≤ 3 s (median of warm starts)',
      warmMedian !== undefined ? warmMedian / 1000 : undefined, 3,
      n => `${n.toFixed(2)} s`)
  ]
}
