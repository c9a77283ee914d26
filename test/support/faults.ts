// Helpers shared by the fault tests (test/faults-*.test.ts).
import type net from 'node:net'
import type { App } from '../../app.js'

/** What a load generator saw of one request. */
export interface Outcome {
  kind: string
  sentAt: number
  doneAt: number
  status: number
  contentType: string
  code?: string
  retryAfter?: string
  /** A network error instead of a response (the server went away). */
  error?: string
}

/** A response that is not 2xx must be a 503 problem+json with code SERVICE_UNAVAILABLE and Retry-After. */
export function isClean503 (o: Outcome) {
  return o.status === 503 && /^application\/problem\+json/.test(o.contentType) && o.code === 'SERVICE_UNAVAILABLE' && o.retryAfter === '1'
}

/** A one-line summary of outcomes by status, for the test log. */
export function tally (outcomes: Outcome[]) {
  const counts = new Map<string, number>()
  for (const o of outcomes) {
    const key = o.error ? `error(${o.error})` : String(o.status)
    counts.set(key, (counts.get(key) ?? 0) + 1)
  }
  return [...counts].sort().map(([k, n]) => `${k}×${n}`).join(' ')
}

/** Listens on a free port of 127.0.0.1 and returns the base URL (real HTTP, not inject). */
export async function listen (app: App) {
  await app.listen({ port: 0, host: '127.0.0.1' })
  return `http://127.0.0.1:${(app.server.address() as net.AddressInfo).port}`
}

/** One request over real HTTP; a network error is an outcome too, never a throw. */
export async function call (base: string, kind: string, init: RequestInit & { url: string }): Promise<Outcome> {
  const sentAt = Date.now()
  try {
    const res = await fetch(base + init.url, { ...init, signal: AbortSignal.timeout(15_000) })
    const text = await res.text()
    let code: string | undefined
    try { code = (JSON.parse(text) as { code?: string }).code } catch {}
    return {
      kind,
      sentAt,
      doneAt: Date.now(),
      status: res.status,
      contentType: res.headers.get('content-type') ?? '',
      code,
      retryAfter: res.headers.get('retry-after') ?? undefined
    }
  } catch (err) {
    return { kind, sentAt, doneAt: Date.now(), status: 0, contentType: '', error: (err as Error).name }
  }
}

/**
 * An open-loop load: `send(k)` for k = 0, 1, … at `rate` a second for `durationMs`, without
 * waiting for earlier answers; each step runs once its time has come. The ticks pace the load;
 * nothing waits on them for synchronisation. A late tick sends whatever is due by then, so a
 * busy machine does not lower the rate. Resolves with every answer.
 */
export async function openLoop<T> ({ rate, durationMs, steps = [], send }: {
  rate: number
  durationMs: number
  steps?: Array<{ atMs: number, run: () => void }>
  send: (k: number) => Promise<T>
}): Promise<T[]> {
  const total = Math.round(rate * durationMs / 1000)
  const sent: Array<Promise<T>> = []
  const pending = [...steps].sort((a, b) => a.atMs - b.atMs)
  const started = Date.now()
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      const elapsed = Date.now() - started
      while (pending.length && elapsed >= pending[0]!.atMs) pending.shift()!.run()
      for (const due = Math.min(total, Math.floor(elapsed * rate / 1000)); sent.length < due;) sent.push(send(sent.length))
      if (sent.length >= total && !pending.length) {
        clearInterval(timer)
        resolve()
      }
    }, 50)
  })
  return Promise.all(sent)
}
