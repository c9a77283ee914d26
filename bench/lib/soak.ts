// Memory through a longer tenant-read load: the heap from the service's own metrics (a service
// of its own with METRICS_ENABLED), sampled every second, and its RSS.
import { closedLoop, type LoadSpec } from './load.js'
import { sample, summarise } from './measure.js'
import { freePort } from './procs.js'
import type { TargetResult } from './report.js'
import type { Stack } from './stack.js'

export interface MemoryResult {
  soakS: number
  connections: number
  rps: number
  heapUsedStartMiB: number
  heapUsedPeakMiB: number
  heapUsedEndMiB: number
  heapTotalPeakMiB: number
  rssPeakMiB: number
  rssEndMiB: number
}

export async function soak (
  stack: Stack, load: (base: string) => LoadSpec, o: { soakS: number, connections: number }, log: (msg: string) => void
) {
  const metricsPort = await freePort()
  const server = await stack.startService('service (metrics)', { METRICS_ENABLED: 'true', METRICS_PORT: String(metricsPort) })
  try {
    const scrape = async () => {
      const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()
      const value = (name: string) => Number(new RegExp(`^${name} ([0-9.e+]+)`, 'm').exec(text)?.[1] ?? NaN)
      return { used: value('nodejs_heap_size_used_bytes'), total: value('nodejs_heap_size_total_bytes') }
    }
    let heapPeak = 0
    let heapTotalPeak = 0
    const timer = setInterval(() => {
      scrape().then(h => { heapPeak = Math.max(heapPeak, h.used); heapTotalPeak = Math.max(heapTotalPeak, h.total) }).catch(() => {})
    }, 1000)
    const start = await scrape()
    const name = `tenant-read (${o.soakS} s, metrics on)`
    log(`measuring ${name} (${o.connections} connections)`)
    const spec = load(server.base)
    const s = await sample(stack, { name, server, drive: d => closedLoop(spec, o.connections, d) }, o.soakS, log)
    clearInterval(timer)
    const end = await scrape()
    const mib = (bytes: number) => bytes / 2 ** 20
    const memory: MemoryResult = {
      soakS: o.soakS,
      connections: o.connections,
      rps: s.rps,
      heapUsedStartMiB: mib(start.used),
      heapUsedPeakMiB: mib(Math.max(heapPeak, end.used)),
      heapUsedEndMiB: mib(end.used),
      heapTotalPeakMiB: mib(Math.max(heapTotalPeak, end.total)),
      rssPeakMiB: s.rssPeakMiB,
      rssEndMiB: s.rssEndMiB
    }
    const result: TargetResult = summarise(name, [s])
    return { memory, result }
  } finally {
    await server.child.stop()
  }
}
