// Ratios between targets measured in the same interleaved rounds: the median of the per-round
// ratios (round i of A over round i of B, run minutes apart at most), with their spread.
import type { TargetResult } from './report.js'
import { median, spread } from './stats.js'

export interface Ratio { value: number, spread: [number, number], rounds: number[] }

const NONE: Ratio = { value: NaN, spread: [NaN, NaN], rounds: [] }

function perRound (a: number[] | undefined, b: number[] | undefined, f: (x: number, y: number) => number): Ratio {
  if (!a || !b || a.length !== b.length || a.length === 0) return NONE
  const rounds = a.map((x, i) => f(x, b[i]!))
  return { value: median(rounds), spread: spread(rounds), rounds }
}

/**
 * For each pair [a, b]: a's req/s over b's, and by server CPU per request b's cost over a's
 * (a's capacity relative to b's on equal CPU: far steadier than req/s on a shared machine).
 * Pairs not both measured are left out.
 */
export function compare (results: TargetResult[], pairs: Array<[string, string]>) {
  const find = (name: string) => results.find(t => t.name === name)
  const byRps: Record<string, Ratio> = {}
  const byCpu: Record<string, Ratio> = {}
  for (const [a, b] of pairs) {
    const ta = find(a)
    const tb = find(b)
    const key = `${a} / ${b}`
    const r = perRound(ta?.rpsRounds, tb?.rpsRounds, (x, y) => x / y)
    const c = perRound(ta?.cpuUsRounds, tb?.cpuUsRounds, (x, y) => y / x)
    if (Number.isFinite(r.value)) byRps[key] = r
    if (Number.isFinite(c.value)) byCpu[key] = c
  }
  return { byRps, byCpu }
}

/** Difference of the median server CPU per request, a − b, µs (what a limiter costs per request). */
export function cpuDiff (results: TargetResult[], a: string, b: string) {
  const x = results.find(t => t.name === a)?.cpuUsPerReq
  const y = results.find(t => t.name === b)?.cpuUsPerReq
  return x !== undefined && y !== undefined ? x - y : NaN
}
