// Probes from another process, as a kubelet's are. A test's load generator shares the app's
// event loop; on a loaded machine a probe sent from that loop waits its turn twice, and a
// short outage can pass between two samples. Out here the samples keep their pace, and the
// app answers each as soon as its own loop reaches it.
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { canConnect } from '../../scripts/net.js'

/** One probe round: liveness and readiness, sent together. Status 0: no answer. */
export interface ProbeSample { sentAt: number, doneAt: number, live: number, ready: number, failing: string[] }
/** One attempt to connect to Postgres and run `SELECT 1`. */
export interface PgSample { sentAt: number, doneAt: number, ok: boolean }

export interface OutsideProber {
  /** In the order they were answered. */
  probes: ProbeSample[]
  pg: PgSample[]
  /** Starts or stops sampling Postgres (a new connection every 10 ms or so). */
  watchPostgres(on: boolean): void
  /** Stops probing, waits for the answers still due, and ends the process. */
  stop(): Promise<void>
}

const self = fileURLToPath(import.meta.url)

/** Probes `/health` and `/api/v1/health` of `base` every `intervalMs`, without waiting for earlier answers. */
export async function startOutsideProber (base: string, pgUrl: string, intervalMs = 25): Promise<OutsideProber> {
  const child = spawn(process.execPath, ['--import', 'tsx', self, base, pgUrl, String(intervalMs)], { stdio: ['pipe', 'pipe', 'inherit'] })
  const exited = new Promise<number | null>(resolve => child.once('exit', resolve))
  const probes: ProbeSample[] = []
  const samples: PgSample[] = []
  const started = new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (line) => {
      const msg = JSON.parse(line) as { probe?: ProbeSample, pg?: PgSample, ready?: true }
      if (msg.probe) probes.push(msg.probe)
      if (msg.pg) samples.push(msg.pg)
      if (msg.ready) resolve()
    })
    exited.then(code => reject(new Error(`the prober exited (${code}) before it started`)), reject)
  })
  await started
  return {
    probes,
    pg: samples,
    watchPostgres (on) { child.stdin.write(on ? 'pg on\n' : 'pg off\n') },
    async stop () {
      if (child.exitCode !== null) return
      child.stdin.end('stop\n')
      let timer: NodeJS.Timeout | undefined
      const late = new Promise(resolve => { timer = setTimeout(resolve, 20_000) })
      await Promise.race([exited, late])
      clearTimeout(timer)
      if (child.exitCode === null) child.kill('SIGKILL')
    }
  }
}

async function main ([base, pgUrl, interval]: string[]) {
  const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))
  const emit = (msg: object) => process.stdout.write(JSON.stringify(msg) + '\n')
  const state = { stopping: false, watching: false }
  const pending = new Set<Promise<void>>()

  const get = async (url: string) => {
    try {
      const res = await fetch(base + url, { signal: AbortSignal.timeout(15_000) })
      return { status: res.status, body: await res.json() as { checks?: Array<{ name: string, ok: boolean }> } }
    } catch {
      return { status: 0, body: {} }
    }
  }
  const probe = async () => {
    const sentAt = Date.now()
    const [live, ready] = await Promise.all([get('/health'), get('/api/v1/health')])
    const failing = (ready.body.checks ?? []).filter(c => !c.ok).map(c => c.name)
    emit({ probe: { sentAt, doneAt: Date.now(), live: live.status, ready: ready.status, failing } })
  }
  const accepting = () => canConnect(pgUrl!, 5000)
  const watchPostgres = async () => {
    while (state.watching) {
      const sentAt = Date.now()
      const ok = await accepting()
      emit({ pg: { sentAt, doneAt: Date.now(), ok } })
      await sleep(10)
    }
  }

  createInterface({ input: process.stdin }).on('line', (line) => {
    if (line === 'pg on' && !state.watching) {
      state.watching = true
      watchPostgres().catch(() => {})
    }
    if (line === 'pg off') state.watching = false
    if (line === 'stop') state.stopping = true
  })
  emit({ ready: true })
  while (!state.stopping) {
    if (pending.size < 20) {
      const p = probe().finally(() => pending.delete(p))
      pending.add(p)
    }
    await sleep(Number(interval))
  }
  state.watching = false
  await Promise.all(pending)
  process.exit(0)
}

if (process.argv[1] === self) await main(process.argv.slice(2))
