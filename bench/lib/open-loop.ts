// Requests at a fixed arrival rate, whatever the server's answers do: the latency a user sees
// below saturation. Not autocannon's overallRate, which is closed-loop where it matters: it
// gives each connection a budget per second, reset by timers that all fire together, so the
// requests leave in a burst at the start of each second (each connection waiting for its
// answer before the next), and its coordinated-omission correction assumes 1 ms between
// requests at any rate, filling the histogram with synthetic samples.
// Here request i is due at t0 + i / rate; its latency runs from when it was due (not from
// when it left) to the end of its answer, so a client or server that falls behind shows in
// the figures instead of slowing the arrivals down.
import http from 'node:http'
import { performance } from 'node:perf_hooks'
import { percentile } from '../support.js'
import type { LoadResult, LoadSpec } from './load.js'

export interface OpenLoopOptions {
  /** Requests per second, spaced evenly. */
  rate: number
  durationS: number
  /** Keep-alive connections at most; a request due while all are busy waits (and that counts). */
  maxSockets: number
  timeoutMs?: number
}

export interface OpenLoopResult extends LoadResult {
  offeredRps: number
  /** Requests in flight at most (sent or waiting for a free connection). */
  peakInFlight: number
}

let stopping = false
/** Stops the arrivals of the run in progress (Ctrl-C). */
export function stopOpenLoop () { stopping = true }

export async function openLoop (spec: LoadSpec, opts: OpenLoopOptions): Promise<OpenLoopResult> {
  const url = new URL(spec.url)
  // Requests without a body, taken from `requests` in turn (the rotating tokens); bodies and
  // per-request hooks are for autocannon's closed loop.
  if (spec.body !== undefined || spec.requests?.some(r => r.body !== undefined || r.setupRequest || r.onResponse)) {
    throw new Error('openLoop sends requests without a body and without setupRequest or onResponse')
  }
  const sequence = spec.requests?.length
    ? spec.requests.map(r => ({ method: r.method ?? spec.method ?? 'GET', path: r.path ?? url.pathname + url.search, headers: r.headers }))
    : [{ method: spec.method ?? 'GET', path: url.pathname + url.search, headers: spec.headers }]
  const agent = new http.Agent({ keepAlive: true, maxSockets: opts.maxSockets, maxFreeSockets: opts.maxSockets })
  const timeoutMs = opts.timeoutMs ?? 10_000
  const total = Math.max(1, Math.floor(opts.rate * opts.durationS))
  const interval = 1000 / opts.rate
  const latencies: number[] = []
  const counts = { non2xx: 0, errors: 0, timeouts: 0 }
  const pending = new Set<http.ClientRequest>()
  let inFlight = 0
  let peakInFlight = 0
  let sent = 0
  let done = 0
  let arrivalsOver = false
  let settled: () => void = () => {}
  const allSettled = new Promise<void>(resolve => { settled = resolve })

  const fire = (i: number, due: number) => {
    const r = sequence[i % sequence.length]!
    const req = http.request({ agent, host: url.hostname, port: url.port, method: r.method, path: r.path, headers: r.headers })
    let over = false
    // Each request ends once, whichever comes first: its answer, an error, its timeout.
    const complete = (outcome: 'ok' | 'non2xx' | 'errors' | 'timeouts') => {
      if (over) return
      over = true
      if (outcome === 'ok') latencies.push(performance.now() - due)
      else counts[outcome]++
      pending.delete(req)
      inFlight--
      if (++done === sent && arrivalsOver) settled()
    }
    pending.add(req)
    peakInFlight = Math.max(peakInFlight, ++inFlight)
    req.setTimeout(timeoutMs, () => { complete('timeouts'); req.destroy() })
    req.on('error', () => complete('errors'))
    req.on('response', res => {
      const ok = res.statusCode !== undefined && res.statusCode >= 200 && res.statusCode < 300
      res.on('data', () => {})
      res.on('end', () => complete(ok ? 'ok' : 'non2xx'))
      res.on('error', () => complete('errors'))
    })
    req.end()
  }

  stopping = false
  const t0 = performance.now()
  await new Promise<void>(resolve => {
    const tick = () => {
      const now = performance.now()
      // Every request due by now (more than one when the timer fired late).
      for (; sent < total && t0 + sent * interval <= now; sent++) fire(sent, t0 + sent * interval)
      if (sent >= total || stopping) { resolve(); return }
      setTimeout(tick, Math.max(0, t0 + sent * interval - performance.now()))
    }
    tick()
  })
  const windowS = (performance.now() - t0) / 1000
  arrivalsOver = true
  if (done < sent) {
    // The stragglers get the request timeout and a second: whatever is left then is dropped.
    const bound = setTimeout(() => {
      for (const req of pending) req.destroy()
      settled()
    }, stopping ? 0 : timeoutMs + 1000)
    await allSettled
    clearTimeout(bound)
  }
  agent.destroy()
  latencies.sort((a, b) => a - b)
  return {
    rps: latencies.length / windowS,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    requests: sent,
    non2xx: counts.non2xx,
    errors: counts.errors,
    timeouts: counts.timeouts,
    durationS: windowS,
    offeredRps: opts.rate,
    peakInFlight
  }
}
