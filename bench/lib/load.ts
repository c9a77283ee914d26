// One measured target: a warm-up, then the measured autocannon run with the same connections
// and duration as every other target. Only 2xx answers count as served requests.
import autocannon from 'autocannon'

export type Request = autocannon.Request

export interface LoadSpec {
  url: string
  method?: 'GET' | 'POST'
  headers?: Record<string, string>
  body?: string
  /** A sequence each connection cycles through (rotating tokens), or per-request setup. */
  requests?: Request[]
  /** Runs after each autocannon run (warm-up and measured), before the next. */
  afterRun?: () => Promise<void>
}

export interface LoadOptions { connections: number, durationS: number, warmupS: number }

export interface LoadResult {
  rps: number
  p50Ms: number
  p99Ms: number
  requests: number
  non2xx: number
  errors: number
  timeouts: number
  durationS: number
}

let current: autocannon.Instance | undefined
/** Stops the run in progress (Ctrl-C). */
export function stopLoad () { current?.stop() }

function run (spec: LoadSpec, connections: number, durationS: number): Promise<autocannon.Result> {
  return new Promise((resolve, reject) => {
    const opts: autocannon.Options = {
      url: spec.url,
      connections,
      duration: durationS,
      method: spec.method ?? 'GET',
      timeout: 10,
      ...(spec.headers ? { headers: spec.headers } : {}),
      ...(spec.body !== undefined ? { body: spec.body } : {}),
      ...(spec.requests ? { requests: spec.requests } : {})
    }
    current = autocannon(opts, (err, result) => {
      current = undefined
      if (err) reject(err)
      else resolve(result)
    })
  })
}

export async function measure (spec: LoadSpec, opts: LoadOptions): Promise<LoadResult> {
  if (opts.warmupS > 0) await run(spec, opts.connections, opts.warmupS)
  const r = await run(spec, opts.connections, opts.durationS)
  const ok = r['2xx']
  return {
    rps: ok / r.duration,
    p50Ms: r.latency.p50,
    p99Ms: r.latency.p99,
    requests: r.requests.total,
    non2xx: r.non2xx,
    errors: r.errors,
    timeouts: r.timeouts,
    durationS: r.duration
  }
}
