// Child processes of the bench: spawned (optionally pinned to a core), awaited until they
// answer, sampled for RSS, and always stopped: at the end, on Ctrl-C and on a crash.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { readFileSync, readdirSync } from 'node:fs'

export interface Child {
  name: string
  proc: ChildProcess
  pid: number
  /** The last lines it wrote to stderr (for the error when it dies early). */
  stderr(): string
  /** With captureStdout: each stdout line and when it arrived (Date.now()). */
  stdoutLines: Array<{ at: number, line: string }>
  stop(): Promise<void>
}

const children = new Set<Child>()
const cleanups: Array<() => Promise<void> | void> = []

/** `taskset` present and at least two cores: the servers go to core 0, the load to core 1. */
export function canPin (): boolean {
  const cores = readFileSync('/proc/cpuinfo', 'utf8').match(/^processor\s*:/gm)?.length ?? 1
  return spawnSync('taskset', ['--version']).status === 0 && cores >= 2
}

/** Pins a process (all its threads) to one core; false when taskset refuses. */
export function pin (pid: number, cpu: number): boolean {
  return spawnSync('taskset', ['-a', '-p', '-c', String(cpu), String(pid)], { stdio: 'ignore' }).status === 0
}

/** The current affinity list of a process ("0,1"), to put it back later. */
export function affinity (pid: number): string | null {
  const r = spawnSync('taskset', ['-p', '-c', String(pid)], { encoding: 'utf8' })
  return r.status === 0 ? (r.stdout.split(':').pop() ?? '').trim() : null
}

export function restoreAffinity (pid: number, list: string) {
  spawnSync('taskset', ['-a', '-p', '-c', list, String(pid)], { stdio: 'ignore' })
}

/** A process and every descendant alive now (children forked later inherit the pin). */
export function processTree (root: number): number[] {
  const parents = new Map<number, number[]>()
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const ppid = Number(/^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${entry}/status`, 'utf8'))?.[1])
      const list = parents.get(ppid) ?? []
      list.push(Number(entry))
      parents.set(ppid, list)
    } catch { /* gone meanwhile */ }
  }
  const out: number[] = []
  const walk = (pid: number) => { out.push(pid); for (const c of parents.get(pid) ?? []) walk(c) }
  walk(root)
  return out
}

export function parentPid (pid: number): number | null {
  try {
    return Number(/^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1])
  } catch {
    return null
  }
}

/** Resident set size of a process in bytes (VmRSS), or null once it is gone. */
export function rssBytes (pid: number): number | null {
  try {
    const kb = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]
    return kb ? Number(kb) * 1024 : null
  } catch {
    return null
  }
}

/** Samples a process's RSS every `everyMs` until stopped: peak and last. */
export function sampleRss (pid: number, everyMs = 250) {
  let peak = 0
  let last = 0
  const tick = () => {
    const v = rssBytes(pid)
    if (v !== null) { last = v; peak = Math.max(peak, v) }
  }
  tick()
  const timer = setInterval(tick, everyMs)
  return { stop () { clearInterval(timer); tick(); return { peak, last } } }
}

export { freePort } from '../../scripts/net.js'

export interface SpawnOptions {
  name: string
  command: string
  args: string[]
  env: Record<string, string>
  cwd?: string
  /** Core to pin to (through `taskset -c`, which execs: the pid is the program's). */
  cpu?: number | undefined
  captureStdout?: boolean
}

/** Spawns a child the bench will stop, whatever happens. */
export function spawnChild (opts: SpawnOptions): Child {
  const [command, args] = opts.cpu === undefined
    ? [opts.command, opts.args]
    : ['taskset', ['-c', String(opts.cpu), opts.command, ...opts.args]]
  const proc = spawn(command, args, { env: opts.env, cwd: opts.cwd, stdio: ['ignore', opts.captureStdout ? 'pipe' : 'ignore', 'pipe'] })
  let tail = ''
  proc.stderr!.on('data', (d: Buffer) => { tail = (tail + d.toString()).slice(-4000) })
  const stdoutLines: Array<{ at: number, line: string }> = []
  if (opts.captureStdout) {
    let partial = ''
    proc.stdout!.on('data', (d: Buffer) => {
      const at = Date.now()
      const parts = (partial + d.toString()).split('\n')
      partial = parts.pop() ?? ''
      for (const line of parts) if (stdoutLines.length < 1000) stdoutLines.push({ at, line })
    })
  }
  const exited = new Promise<void>(resolve => proc.once('exit', () => resolve()))
  const child: Child = {
    name: opts.name,
    proc,
    pid: proc.pid!,
    stderr: () => tail,
    stdoutLines,
    async stop () {
      children.delete(child)
      if (proc.exitCode !== null || proc.signalCode !== null) return
      proc.kill('SIGTERM')
      const timer = setTimeout(() => proc.kill('SIGKILL'), 8000)
      await exited
      clearTimeout(timer)
    }
  }
  children.add(child)
  return child
}

/** Polls `url` until it answers `status` (the child must stay alive meanwhile). */
export async function waitForHttp (child: Child, url: string, { status = 200, timeoutMs = 30_000, everyMs = 25 } = {}) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (child.proc.exitCode !== null || child.proc.signalCode !== null) {
      throw new Error(`${child.name} exited (${child.proc.exitCode ?? child.proc.signalCode}) before answering ${url}:\n${child.stderr()}`)
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000) })
      await res.arrayBuffer()
      if (res.status === status) return
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) {
      throw new Error(`${child.name} did not answer ${status} at ${url} within ${timeoutMs} ms:\n${child.stderr()}`)
    }
    await new Promise(resolve => setTimeout(resolve, everyMs))
  }
}

/** Something to undo at the end (a database to stop, a folder to remove), run after the children stop. */
export function onCleanup (fn: () => Promise<void> | void) {
  cleanups.push(fn)
}

let cleaning: Promise<void> | undefined
/** Stops every child still running, then runs the cleanups in reverse order. Idempotent. */
export function cleanup (): Promise<void> {
  cleaning ??= (async () => {
    await Promise.all([...children].map(c => c.stop().catch(() => {})))
    for (const fn of cleanups.reverse()) {
      try { await fn() } catch (err) { process.stderr.write(`cleanup: ${(err as Error).message}\n`) }
    }
  })()
  return cleaning
}

/** Ctrl-C, SIGTERM and a crash all end with every child stopped. */
export function installSignalHandlers () {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      process.stderr.write(`\n${signal}: stopping the servers and the database…\n`)
      const force = setTimeout(() => process.exit(130), 20_000)
      force.unref()
      cleanup().finally(() => process.exit(130))
    })
  }
  // Last resort when the process exits without the cleanup (an uncaught error): no orphans.
  process.on('exit', () => { for (const c of children) c.proc.kill('SIGKILL') })
}

// /proc times are in USER_HZ ticks, 100 per second on Linux.
const CLK_TCK = 100

function procJiffies (pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return Number(rest[11]) + Number(rest[12])
  } catch {
    return 0
  }
}

function machineJiffies () {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number)
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = line
  return { busy: user + nice + system + irq + softirq + steal, all: user + nice + system + idle + iowait + irq + softirq + steal }
}

/**
 * The database a Postgres client backend serves, from its title ("postgres: [cluster: ]user
 * database host(port) state"); null for the server's own processes (checkpointer, walwriter…).
 */
export function backendDatabase (pid: number): string | null {
  try {
    const title = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ')
    return / (\S+) (\S+) (?:\S+\(\d+\)|\[local\])/.exec(title)?.[2] ?? null
  } catch {
    return null
  }
}

/**
 * CPU accounting over one measured run, robust on a shared machine: the CPU seconds of the
 * server side (the processes `serverSide` lists: the target, Postgres, Redis), of this bench
 * process (the load generator), and how busy the machine was with work that is not ours (% of
 * all cores: other people's tests on a shared box show up here). Per process, so a process that
 * exits during the run (an idle pool connection's backend) does not take its history with it.
 */
export function cpuMeter ({ serverSide, app, ours }: { serverSide: () => number[], app: number, ours: () => number[] }) {
  const snap = (pids: () => number[]) => new Map(pids().map(pid => [pid, procJiffies(pid)]))
  const delta = (before: Map<number, number>, after: Map<number, number>) => {
    let sum = 0
    for (const [pid, j] of after) sum += Math.max(0, j - (before.get(pid) ?? 0))
    return sum
  }
  const m0 = machineJiffies()
  const s0 = snap(serverSide)
  const o0 = snap(ours)
  const b0 = procJiffies(process.pid)
  const a0 = procJiffies(app)
  return {
    stop () {
      const m1 = machineJiffies()
      const server = delta(s0, snap(serverSide))
      const mine = delta(o0, snap(ours))
      const bench = procJiffies(process.pid) - b0
      const appOnly = procJiffies(app) - a0
      const all = m1.all - m0.all
      return {
        otherLoadPct: all > 0 ? Math.min(100, Math.max(0, (m1.busy - m0.busy - mine) / all * 100)) : 0,
        serverCpuS: server / CLK_TCK,
        /** The measured process alone (the service or the baseline, without Postgres/Redis). */
        appCpuS: appOnly / CLK_TCK,
        benchCpuS: bench / CLK_TCK
      }
    }
  }
}
