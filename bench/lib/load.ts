// The closed-loop load: autocannon with a fixed number of connections, each sending its next
// request when the answer to the last one is in (the server's capacity). Only 2xx answers
// count as served requests. The open-loop load (a fixed arrival rate) is in open-loop.ts.
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

export interface LoadResult {
  rps: number
  p50Ms: number
  p99Ms: number
  requests: number
  non2xx: number
  errors: number
  timeouts: number
  durationS: number
  /** The answers that were not 2xx, by status. */
  statusCodes?: Record<string, number>
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

export async function closedLoop (spec: LoadSpec, connections: number, durationS: number): Promise<LoadResult> {
  const r = await run(spec, connections, durationS)
  const ok = r['2xx']
  const statusCodes = Object.fromEntries(Object.entries(r.statusCodeStats ?? {})
    .filter(([code]) => !code.startsWith('2')).map(([code, s]) => [code, s.count ?? 0]))
  return {
    rps: ok / r.duration,
    p50Ms: r.latency.p50,
    p99Ms: r.latency.p99,
    requests: r.requests.total,
    non2xx: r.non2xx,
    errors: r.errors,
    timeouts: r.timeouts,
    durationS: r.duration,
    ...(Object.keys(statusCodes).length ? { statusCodes } : {})
  }
}
