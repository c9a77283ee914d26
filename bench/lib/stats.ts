// Medians and spreads over rounds: what the bench reports instead of one run's figure.

export function median (xs: number[]): number {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b)
  if (s.length === 0) return NaN
  const mid = Math.floor(s.length / 2)
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

/** [min, max] of the finite values ([NaN, NaN] when there is none). */
export function spread (xs: number[]): [number, number] {
  const s = xs.filter(Number.isFinite)
  return s.length ? [Math.min(...s), Math.max(...s)] : [NaN, NaN]
}

export const round1 = (n: number) => Math.round(n * 10) / 10

/** Relative difference of two figures, against the larger: 0.1 = they are 10 % apart. */
export const apart = (a: number, b: number) => Math.abs(a - b) / Math.max(Math.abs(a), Math.abs(b), Number.MIN_VALUE)
