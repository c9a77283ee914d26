// What the targets run on: the compiled service and baselines, one real Postgres, Redis when a
// target needs it, and the pinning of servers and Postgres to core 0 and the load to core 1.
import { existsSync } from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import pg from 'pg'
import { ConfigSchema } from '../../config.js'
import { benchDatabase } from '../support.js'
import { BUILD_DIR, ROOT, buildService } from './build.js'
import type { BenchOptions } from './cli.js'
import {
  affinity, backendDatabase, canPin, freePort, onCleanup, parentPid, pin, processTree, restoreAffinity, spawnChild, waitForHttp, type Child
} from './procs.js'

export interface Server {
  name: string
  child: Child
  base: string
  /** Uses the Redis server: its CPU counts as the target's. */
  redis?: boolean
}

/** How a baseline shows it is up and answers like the service (the reads: `members` rows). */
export interface Probe { path: string, headers?: Record<string, string>, members?: number }

export class Stack {
  /** CPU the servers are pinned to, once pinAll has run. */
  cpuServer: number | undefined
  pinning: string
  private redis: { url: string, pid: number } | undefined
  private readonly dbName: string

  private constructor (
    private readonly opts: BenchOptions,
    private readonly log: (msg: string) => void,
    readonly serverJs: string,
    readonly db: Awaited<ReturnType<typeof benchDatabase>>,
    /** Postgres's version and settings, for the report. */
    readonly postgres: string,
    private readonly postmaster: number | null,
    /** The environment of every child: none of the service's settings leak in from this shell. */
    readonly cleanEnv: Record<string, string>
  ) {
    this.pinning = opts.noPin ? 'not pinned (--no-pin)' : 'not pinned (no taskset or one core)'
    this.dbName = decodeURIComponent(new URL(db.runtimeUrl).pathname.slice(1))
  }

  /** Compiles the service and the baselines and starts a migrated database. */
  static async create (opts: BenchOptions, log: (msg: string) => void) {
    log('compiling the service and the baselines (tsc, tsconfig.build.json settings)')
    const build = buildService()
    log(`built in ${(build.ms / 1000).toFixed(1)} s`)
    if (build.warnings) {
      log(`WARNING: tsc reported errors (JavaScript emitted anyway):\n${build.warnings.split('\n').slice(0, 10).join('\n')}`)
    }
    log('starting Postgres and a migrated database')
    const db = await benchDatabase()
    onCleanup(() => db.stop())
    const probe = new pg.Client({ connectionString: db.runtimeUrl })
    await probe.connect()
    const { rows: [info] } = await probe.query<{ pid: number, version: string, max: string }>(
      "SELECT pg_backend_pid() AS pid, current_setting('server_version') AS version, current_setting('max_connections') AS max")
    // The postmaster is the backend's parent: read it while the backend still exists.
    const postmaster = parentPid(info!.pid)
    await probe.end()
    const source = process.env.TEST_DATABASE_URL ? 'TEST_DATABASE_URL' : 'embedded'
    const cleanEnv: Record<string, string> = {}
    for (const [k, v] of Object.entries(process.env)) {
      if (v !== undefined && !(k in ConfigSchema.properties) && k !== 'NODE_OPTIONS') cleanEnv[k] = v
    }
    const postgres = `Postgres ${info!.version} (max_connections ${info!.max}, ${source})`
    return new Stack(opts, log, path.join(BUILD_DIR, 'server.js'), db, postgres, postmaster, cleanEnv)
  }

  get pinned () { return this.pinning.startsWith('servers') }

  /**
   * Postgres's processes that work for the bench: the server's own (postmaster, writers) and the
   * backends of the bench database, not those of other databases on a shared TEST_DATABASE_URL
   * server (other people's tests: the machine's other load, not the target's cost).
   */
  private postgresPids (): number[] {
    if (!this.postmaster) return []
    return processTree(this.postmaster).filter(pid => {
      const db = backendDatabase(pid)
      return db === null || db === this.dbName
    })
  }

  /** Ours: this process and its children (servers, Redis, an embedded Postgres), and our part of an external Postgres. */
  ours = () => [...new Set([...processTree(process.pid), ...this.postgresPids()])]

  /** The server side of a target: its process, our part of Postgres, and Redis when it uses it. */
  serverSide (pid: number, withRedis = false) {
    return [...new Set([...processTree(pid), ...this.postgresPids(), ...(this.redis && withRedis ? [this.redis.pid] : [])])]
  }

  /**
   * Postgres and the servers on core 0, autocannon (this process) on core 1: applied once the
   * seed is in (argon2 signups go faster on both cores); later servers start pinned.
   */
  pinAll (servicePid: number) {
    if (this.opts.noPin || !canPin()) return
    const postmaster = this.postmaster
    let ok = pin(servicePid, 0)
    if (postmaster) {
      const before = affinity(postmaster)
      // A backend that exited meanwhile is no failure; one still alive and unpinned is.
      ok = processTree(postmaster).every(pid => pin(pid, 0) || !existsSync(`/proc/${pid}`)) && ok
      if (process.env.TEST_DATABASE_URL && before) {
        onCleanup(() => { for (const pid of processTree(postmaster)) restoreAffinity(pid, before) })
      }
    } else {
      ok = false
    }
    pin(process.pid, 1)
    this.cpuServer = 0
    this.pinning = ok
      ? 'servers and Postgres on core 0, autocannon (the bench process) on core 1 (taskset)'
      : 'partly pinned: taskset refused some processes'
    this.log(this.pinning)
  }

  /** The compiled service (`node server.js`) in production mode; --cpu-prof applies to `profile`. */
  async startService (name: string, extra: Record<string, string> = {}, profile = false): Promise<Server> {
    const port = await freePort()
    const nodeArgs = profile && this.opts.cpuProf ? ['--cpu-prof', '--cpu-prof-dir', path.resolve(this.opts.cpuProf)] : []
    const env: Record<string, string> = {
      ...this.cleanEnv,
      NODE_ENV: 'production',
      LOG_LEVEL: 'warn',
      HOST: '127.0.0.1',
      PORT: String(port),
      DATABASE_URL: this.db.runtimeUrl,
      MIGRATION_DATABASE_URL: this.db.ownerUrl,
      DB_MAX_CONNECTIONS: String(this.opts.dbMax),
      // The per-IP limiters and the login throttle count every request but never refuse one: all
      // the load comes from 127.0.0.1, and a login in flight counts as a failure until verified.
      RATE_LIMIT_MAX: '1000000000',
      AUTH_RATE_LIMIT_MAX: '1000000000',
      LOGIN_MAX_FAILURES_PER_CLIENT: '1000000000',
      LOGIN_MAX_FAILURES_PER_HOUR: '1000000000',
      ACCESS_TOKEN_TTL_S: '7200',
      ...extra
    }
    const child = spawnChild({ name, command: process.execPath, args: [...nodeArgs, this.serverJs], env, cwd: ROOT, cpu: this.cpuServer })
    await waitForHttp(child, `http://127.0.0.1:${port}/api/v1/health`)
    return { name, child, base: `http://127.0.0.1:${port}` }
  }

  /** A baseline of bench/baselines, checked to answer like the service before it is measured. */
  async startBaseline (name: string, file: string, probe: Probe, extra: Record<string, string> = {}): Promise<Server> {
    const port = await freePort()
    const child = spawnChild({
      name,
      command: process.execPath,
      args: [path.join(BUILD_DIR, 'bench', 'baselines', `${file}.js`)],
      env: {
        ...this.cleanEnv,
        PORT: String(port),
        HOST: '127.0.0.1',
        DATABASE_URL: this.db.runtimeUrl,
        MIGRATION_DATABASE_URL: this.db.ownerUrl,
        DB_MAX_CONNECTIONS: String(this.opts.dbMax),
        ...extra
      },
      cwd: ROOT,
      cpu: this.cpuServer
    })
    const base = `http://127.0.0.1:${port}`
    try {
      await waitForHttp(child, base + '/', { status: probe.path === '/' ? 200 : 404 })
      const res = await fetch(base + probe.path, { headers: probe.headers ?? {} })
      const body = await res.text()
      if (res.status !== 200) throw new Error(`${name}: ${probe.path} → ${res.status} ${body}`)
      const rows = probe.members !== undefined ? (JSON.parse(body) as { members: unknown[] }).members.length : undefined
      if (rows !== probe.members) throw new Error(`${name}: expected ${probe.members} members, got ${body}`)
    } catch (err) {
      await child.stop()
      throw err
    }
    return { name, child, base }
  }

  /** A private redis-server (no persistence), started once, on the servers' core. */
  async redisUrl (): Promise<string> {
    if (this.redis) return this.redis.url
    const port = await freePort()
    const child = spawnChild({
      name: 'redis-server',
      command: 'redis-server',
      args: ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
      env: this.cleanEnv,
      cpu: this.cpuServer
    })
    await waitForRedis(child, port)
    this.redis = { url: `redis://127.0.0.1:${port}`, pid: child.pid }
    return this.redis.url
  }
}

async function waitForRedis (child: Child, port: number) {
  const deadline = Date.now() + 5000
  for (;;) {
    const ok = await new Promise<boolean>(resolve => {
      const s = net.connect(port, '127.0.0.1')
      s.on('connect', () => s.write('PING\r\n'))
      s.on('data', d => { s.destroy(); resolve(d.toString().startsWith('+PONG')) })
      s.on('error', () => resolve(false))
    })
    if (ok) return
    if (child.proc.exitCode !== null || Date.now() > deadline) throw new Error(`redis-server did not start:\n${child.stderr()}`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}
