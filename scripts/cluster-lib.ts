// A real cluster on one machine: Postgres, PgBouncer (transaction pooling), Redis, N
// replicas of the service and nginx as the round-robin balancer, each a process of its own.
// `npm run cluster` (scripts/cluster.ts) and test/cluster.test.ts both start it from here.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs'
import { chmod, chown, mkdir, writeFile } from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { ConfigSchema } from '../config.js'
import { embeddedCredentials, startEmbeddedPostgres, type EmbeddedServer } from '../db/embedded.js'
import { migrate } from '../db/migrate.js'
import { APP_ROLE, provisionDatabase } from '../db/provision.js'
import { canConnect, freePort } from './net.js'

/** The repository root: the folder above this file's that holds package.json (from scripts/ or dist/scripts/). */
function findRoot () {
  let dir = path.dirname(fileURLToPath(import.meta.url))
  while (!existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir)
    if (up === dir) throw new Error('cluster: package.json not found above scripts/')
    dir = up
  }
  return dir
}
export const ROOT = findRoot()
/** The proxy directives the generated nginx config includes; docker compose mounts the same file. */
export const PROXY_CONF = path.join(ROOT, 'deploy', 'nginx', 'proxy.conf')
/** Where `npm run cluster` keeps configs, logs and credentials by default (git-ignored with the rest of .data/). */
export const DEFAULT_DIR = path.join(ROOT, '.data', 'cluster')

const DEFAULT_ADMIN_URL = 'postgres://postgres@127.0.0.1:5432/postgres'

function which (candidates: string[]): string | null {
  for (const c of candidates) {
    if (c.includes('/')) {
      if (existsSync(c)) return c
      continue
    }
    const found = spawnSync('sh', ['-c', 'command -v "$0"', c], { encoding: 'utf8' })
    if (found.status === 0 && found.stdout.trim()) return found.stdout.trim()
  }
  return null
}

/** The binaries the cluster runs, or null where one is missing (Debian: nginx, pgbouncer, redis-server). */
export function clusterBinaries () {
  return {
    nginx: which([process.env.NGINX_BIN ?? '', '/usr/sbin/nginx', 'nginx'].filter(Boolean)),
    pgbouncer: which([process.env.PGBOUNCER_BIN ?? '', '/usr/sbin/pgbouncer', 'pgbouncer'].filter(Boolean)),
    redis: which([process.env.REDIS_SERVER_BIN ?? '', 'redis-server'].filter(Boolean))
  }
}

/** A free TCP port on 127.0.0.1. */
const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))

async function until (what: string, timeoutMs: number, probe: () => Promise<boolean>, service?: Pick<Service, 'exitReason' | 'logFile'>) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const dead = service?.exitReason()
    if (dead) throw new Error(`${what}: ${dead}`)
    if (await probe().catch(() => false)) return
    if (Date.now() > deadline) {
      const lastLines = service ? `; last lines of ${service.logFile}:\n${tail(service.logFile)}` : ''
      throw new Error(`${what}: not ready after ${timeoutMs} ms${lastLines}`)
    }
    await sleep(50)
  }
}

async function httpOk (url: string) {
  const res = await fetch(url, { signal: AbortSignal.timeout(2000) })
  await res.arrayBuffer()
  return res.ok
}

/** A new connection to `url` opens and answers `SELECT 1` within `timeoutMs`. */
function redisPing (port: number) {
  return new Promise<boolean>(resolve => {
    const s = net.connect(port, '127.0.0.1')
    s.setTimeout(1000, () => { s.destroy(); resolve(false) })
    s.on('connect', () => s.write('PING\r\n'))
    s.on('data', d => { s.destroy(); resolve(d.toString().startsWith('+PONG')) })
    s.on('error', () => resolve(false))
  })
}

function tail (file: string, lines = 20) {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n')
  } catch {
    return '(no log)'
  }
}

// ---- processes ---------------------------------------------------------------------------

// Children run in process groups of their own (detached), so a Ctrl-C in the terminal reaches
// only the script, which then stops them in order. If the script dies some other way, this
// last resort kills every group still alive (nginx workers and all).
const live = new Set<ChildProcess>()
let exitHookInstalled = false
function installExitHook () {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.on('exit', () => {
    for (const child of live) {
      try { process.kill(-child.pid!, 'SIGKILL') } catch {}
    }
  })
}

interface Service {
  name: string
  logFile: string
  child: ChildProcess
  /** Resolves with the exit code (null when a signal ended it). */
  exited: Promise<number | null>
  /** Set once the process has exited: why, for error messages. */
  exitReason: () => string | null
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number | null>
}

function spawnService (
  name: string, command: string, args: string[], opts: { logFile: string, env?: NodeJS.ProcessEnv, cwd?: string }
): Service {
  installExitHook()
  const fd = openSync(opts.logFile, 'a')
  const child = spawn(command, args, { cwd: opts.cwd ?? ROOT, env: opts.env ?? process.env, stdio: ['ignore', fd, fd], detached: true })
  closeSync(fd)
  live.add(child)
  let reason: string | null = null
  const exited = new Promise<number | null>(resolve => {
    child.once('error', (err) => { reason = `could not start ${command}: ${err.message}`; live.delete(child); resolve(null) })
    child.once('exit', (code, signal) => {
      reason = `${name} exited (${signal ?? `code ${code}`}); last lines of ${opts.logFile}:\n${tail(opts.logFile)}`
      live.delete(child)
      resolve(code)
    })
  })
  return {
    name,
    logFile: opts.logFile,
    child,
    exited,
    exitReason: () => reason,
    async stop (signal = 'SIGTERM', timeoutMs = 15_000) {
      if (reason === null) {
        try { process.kill(child.pid!, signal) } catch {}
        const timer = setTimeout(() => { try { process.kill(-child.pid!, 'SIGKILL') } catch {} }, timeoutMs)
        const code = await exited
        clearTimeout(timer)
        // What the leader leaves behind in its group (nginx workers) goes too.
        try { process.kill(-child.pid!, 'SIGKILL') } catch {}
        return code
      }
      return exited
    }
  }
}

// ---- the pieces ----------------------------------------------------------------------------

export interface ClusterOptions {
  /**
   * A superuser URL of the Postgres server to use. Unset: CLUSTER_ADMIN_URL, then
   * TEST_DATABASE_URL, then postgres://postgres@127.0.0.1:5432/postgres; when none was given
   * explicitly and the default does not answer, an embedded Postgres under `dir`.
   */
  adminUrl?: string
  /** Database to create (if absent) and run on. Default `govula_cluster`. */
  database?: string
  /** Create the database as a copy of this (already migrated) one. */
  template?: string
  /** Role passwords. Default: generated once and kept in `dir`/credentials.json. */
  ownerPassword?: string
  appPassword?: string
  replicas?: number
  /** Load balancer port; 0 picks a free one. Default 8080. */
  lbPort?: number
  /** Configs, logs and (embedded) data. Default `.data/cluster`. */
  dir?: string
  /** `source`: node --import tsx server.ts (default); `dist`: node dist/server.js (run `npm run build` first). */
  entry?: 'source' | 'dist'
  /** Where replicas take the settings the cluster does not own (LOG_LEVEL, …). Default process.env. */
  baseEnv?: NodeJS.ProcessEnv
  /** Extra settings for every replica (applied last). */
  appEnv?: Record<string, string>
  /** statement_timeout for the runtime role in this database (PgBouncer drops the startup parameter). */
  statementTimeoutMs?: number
  /** Drop the database on stop (the test's own copy). */
  dropDatabaseOnStop?: boolean
  /** Called when a replica exits without being asked to. */
  onUnexpectedExit?: (replica: Replica, reason: string) => void
  log?: (line: string) => void
}

export interface Replica {
  index: number
  port: number
  /** http://127.0.0.1:port, bypassing the balancer. */
  url: string
  logFile: string
  readonly pid: number | undefined
  readonly running: boolean
  /** Starts the process and resolves once its readiness probe answers 200. */
  start(): Promise<void>
  /** SIGTERM, then waits for the exit (SIGKILL after SHUTDOWN_TIMEOUT_MS + 5 s). Resolves with the exit code. */
  stop(): Promise<number | null>
  /** stop() then start(), on the same port. Resolves with the stopped process's exit code. */
  restart(): Promise<number | null>
}

export interface Cluster {
  /** The balancer: http://127.0.0.1:lbPort */
  url: string
  dir: string
  database: string
  replicas: Replica[]
  postgres: { adminUrl: string, embedded: boolean, directUrl: string, ownerUrl: string }
  pgbouncer: { port: number, url: string, statsUrl: string }
  redis: { url: string }
  nginx: { port: number, accessLog: string }
  stop(): Promise<void>
}

/** Env keys the cluster sets on every replica; the base environment cannot override them. */
const OWNED = ['PORT', 'HOST', 'DATABASE_URL', 'DATABASE_DIRECT_URL', 'MIGRATION_DATABASE_URL', 'REDIS_URL',
  'ENTITLEMENT_BROADCAST_ENABLED', 'TRUST_PROXY', 'DB_STATEMENT_TIMEOUT', 'METRICS_PORT', 'DATA_DIR', 'EMBEDDED_PG_PORT']

function urlWith (
  base: string,
  { user, password, port, database, host }: { user?: string, password?: string, port?: number, database?: string, host?: string }
) {
  const u = new URL(base)
  if (user !== undefined) u.username = encodeURIComponent(user)
  if (password !== undefined) u.password = encodeURIComponent(password)
  if (port !== undefined) u.port = String(port)
  if (host !== undefined) u.hostname = host
  if (database !== undefined) u.pathname = '/' + encodeURIComponent(database)
  return u.toString()
}

const ident = (s: string) => pg.Client.prototype.escapeIdentifier(s)

async function resolvePostgres (opts: ClusterOptions, dir: string, log: (l: string) => void) {
  const explicit = opts.adminUrl ?? process.env.CLUSTER_ADMIN_URL ?? process.env.TEST_DATABASE_URL
  const candidate = explicit ?? DEFAULT_ADMIN_URL
  if (await canConnect(candidate)) {
    const creds = await embeddedCredentials(dir) // only its owner/app passwords are used here
    return { adminUrl: candidate, embedded: undefined, owner: creds.owner, app: creds.app }
  }
  if (explicit) {
    throw new Error(`cluster: cannot connect to the Postgres at ${new URL(explicit).host} (CLUSTER_ADMIN_URL / TEST_DATABASE_URL)`)
  }
  const dataDir = path.join(dir, 'postgres')
  const port = await freePort()
  log(`no Postgres answers at ${new URL(DEFAULT_ADMIN_URL).host}: starting an embedded one (${dataDir}, port ${port})`)
  const embedded = await startEmbeddedPostgres({ dataDir, port })
  const creds = await embeddedCredentials(dataDir)
  return { adminUrl: embedded.adminUrl, embedded, owner: creds.owner, app: creds.app }
}

async function writePrivate (file: string, text: string, uid: number | null) {
  await writeFile(file, text, { mode: 0o600 })
  if (uid !== null) await chown(file, uid, -1)
}

/** The uid pgbouncer runs as: it refuses to run as root, so root hands it to `postgres`. */
function pgbouncerUser (): { name: string, uid: number } | null {
  if (process.getuid?.() !== 0) return null
  const r = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error('cluster: pgbouncer refuses to run as root and there is no `postgres` user to run it as')
  return { name: 'postgres', uid: Number(r.stdout.trim()) }
}

async function startPgBouncer (
  bin: string, dir: string, opts: { database: string, serverUrl: string, appPassword: string, statsPassword: string }
) {
  const pgbDir = path.join(dir, 'pgbouncer')
  await mkdir(pgbDir, { recursive: true })
  const user = pgbouncerUser()
  if (user) await chown(pgbDir, user.uid, -1)
  const port = await freePort()
  const server = new URL(opts.serverUrl)
  const ini = path.join(pgbDir, 'pgbouncer.ini')
  const userlist = path.join(pgbDir, 'userlist.txt')
  // Plain-text passwords in the auth file let PgBouncer answer SCRAM from the clients and
  // log in to the server as the same role (whatever the server's pg_hba asks for).
  await writePrivate(userlist, `"${APP_ROLE}" "${opts.appPassword}"\n"pgbouncer_stats" "${opts.statsPassword}"\n`, user?.uid ?? null)
  await writePrivate(ini, `;; Generated by scripts/cluster-lib.ts for \`npm run cluster\`; rewritten on every start.
[databases]
${opts.database} = host=${server.hostname} port=${server.port || 5432} dbname=${opts.database}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${port}
unix_socket_dir =
pidfile =
logfile =
auth_type = scram-sha-256
auth_file = ${userlist}
;; SHOW POOLS / CLIENTS / CONFIG on the console (database "pgbouncer"), read-only.
stats_users = pgbouncer_stats
;; Transaction pooling: a server connection belongs to a client for one transaction only.
;; The app keeps no session state (tenant context is set_config(..., true) inside each
;; transaction); LISTEN goes to DATABASE_DIRECT_URL and migrations to MIGRATION_DATABASE_URL.
pool_mode = transaction
default_pool_size = 10
reserve_pool_size = 2
max_client_conn = 500
;; PgBouncer refuses startup parameters it does not know. pg sends statement_timeout when
;; DB_STATEMENT_TIMEOUT > 0: the replicas run with DB_STATEMENT_TIMEOUT=0 and the timeout is a
;; role setting in this database instead; listing it here keeps a replica started with the
;; default working (its own value is then dropped: the role's applies).
ignore_startup_parameters = extra_float_digits,statement_timeout
log_connections = 0
log_disconnections = 0
`, user?.uid ?? null)
  const service = spawnService('pgbouncer', bin, [...(user ? ['-u', user.name] : []), ini], { logFile: path.join(dir, 'pgbouncer.log') })
  const url = `postgres://${APP_ROLE}:${encodeURIComponent(opts.appPassword)}@127.0.0.1:${port}/${opts.database}`
  await until('pgbouncer', 10_000, () => canConnect(url, 1000), service)
  return {
    service, port, url, statsUrl: `postgres://pgbouncer_stats:${encodeURIComponent(opts.statsPassword)}@127.0.0.1:${port}/pgbouncer`
  }
}

async function startRedis (bin: string, dir: string) {
  const port = await freePort()
  const service = spawnService('redis', bin,
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
    { logFile: path.join(dir, 'redis.log') })
  await until('redis-server', 10_000, () => redisPing(port), service)
  return { service, url: `redis://127.0.0.1:${port}` }
}

function nginxConf (dir: string, lbPort: number, replicaPorts: number[]) {
  const n = path.join(dir, 'nginx')
  const asRoot = process.getuid?.() === 0
  return `# Generated by scripts/cluster-lib.ts for \`npm run cluster\`; rewritten on every start.
daemon off;
master_process on;
worker_processes 1;
pid ${n}/nginx.pid;
error_log stderr warn;
${asRoot ? 'user nobody nogroup;\n' : ''}
events { worker_connections 1024; }

http {
  log_format upstream '$remote_addr "$request" $status upstream=$upstream_addr/$upstream_status $request_time';
  access_log ${n}/access.log upstream;
  client_body_temp_path ${n}/tmp/body;
  proxy_temp_path ${n}/tmp/proxy;
  fastcgi_temp_path ${n}/tmp/fastcgi;
  uwsgi_temp_path ${n}/tmp/uwsgi;
  scgi_temp_path ${n}/tmp/scgi;

  # Round robin (nginx's default). After a failed attempt a replica is left out for 2 s.
  upstream govula_core {
${replicaPorts.map(p => `    server 127.0.0.1:${p} max_fails=1 fail_timeout=2s;`).join('\n')}
    keepalive 16;
    keepalive_timeout 60s;
  }

  server {
    listen 127.0.0.1:${lbPort};
    # Which replica(s) answered: for the e2e test and for curl -i while experimenting.
    add_header X-Upstream-Addr $upstream_addr always;
    location / {
      proxy_pass http://govula_core;
      include ${PROXY_CONF};
    }
  }
}
`
}

async function startNginx (bin: string, dir: string, lbPort: number, replicaPorts: number[]) {
  const n = path.join(dir, 'nginx')
  await mkdir(path.join(n, 'tmp'), { recursive: true })
  await chmod(n, 0o755)
  const conf = path.join(n, 'nginx.conf')
  await writeFile(conf, nginxConf(dir, lbPort, replicaPorts))
  const logFile = path.join(dir, 'nginx.log')
  const check = spawnSync(bin, ['-t', '-q', '-p', n, '-e', 'stderr', '-c', conf], { encoding: 'utf8' })
  if (check.status !== 0) throw new Error(`cluster: nginx rejects ${conf}:\n${check.stderr}`)
  const service = spawnService('nginx', bin, ['-p', n, '-e', 'stderr', '-c', conf], { logFile })
  await until('nginx', 10_000, () => httpOk(`http://127.0.0.1:${lbPort}/health`), service)
  return { service, accessLog: path.join(n, 'access.log') }
}

function replicaEnv (opts: ClusterOptions, owned: Record<string, string>): NodeJS.ProcessEnv {
  const base = opts.baseEnv ?? process.env
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(base)) {
    if (v !== undefined && !OWNED.includes(k)) env[k] = v
  }
  return {
    ...env,
    NODE_ENV: base.NODE_ENV || 'production',
    LOG_LEVEL: base.LOG_LEVEL || 'info',
    DB_MAX_CONNECTIONS: base.DB_MAX_CONNECTIONS || '10',
    ...owned,
    ...opts.appEnv
  }
}

function createReplica (
  index: number, port: number, dir: string, command: string[], env: NodeJS.ProcessEnv,
  onUnexpectedExit: (r: Replica, reason: string) => void
): Replica {
  let service: Service | undefined
  let stopping = false
  const logFile = path.join(dir, `replica-${index}.log`)
  const shutdownMs = Number(env.SHUTDOWN_TIMEOUT_MS || 10_000)
  const replica: Replica = {
    index,
    port,
    url: `http://127.0.0.1:${port}`,
    logFile,
    get pid () { return service?.child.pid },
    get running () { return service !== undefined && service.exitReason() === null },
    async start () {
      if (replica.running) throw new Error(`replica ${index} is already running`)
      stopping = false
      const s = spawnService(`replica ${index}`, command[0]!, command.slice(1), { logFile, env: { ...env, PORT: String(port) } })
      service = s
      s.exited.then(() => { if (!stopping && service === s) onUnexpectedExit(replica, s.exitReason() ?? 'exited') }, () => {})
      await until(`replica ${index} (port ${port})`, 60_000, async () => {
        const res = await fetch(`${replica.url}/api/v1/health`, { signal: AbortSignal.timeout(2000) })
        await res.arrayBuffer()
        return res.status === 200
      }, s)
    },
    async stop () {
      if (!service) return null
      stopping = true
      return service.stop('SIGTERM', shutdownMs + 5000)
    },
    async restart () {
      const code = await replica.stop()
      await replica.start()
      return code
    }
  }
  return replica
}

/**
 * Starts the whole topology and resolves once the balancer answers. Everything listens on
 * 127.0.0.1; ports other than the balancer's are picked free. stop() tears it down in order:
 * balancer, replicas (graceful SIGTERM), PgBouncer, Redis, then the embedded Postgres if any.
 */
export async function startCluster (opts: ClusterOptions = {}): Promise<Cluster> {
  const log = opts.log ?? (() => {})
  const bins = clusterBinaries()
  const missing = Object.entries(bins).filter(([, v]) => !v).map(([k]) => k === 'redis' ? 'redis-server' : k)
  if (missing.length) throw new Error(`cluster: ${missing.join(', ')} not installed (apt-get install -y ${missing.join(' ')})`)

  const dir = path.resolve(opts.dir ?? DEFAULT_DIR)
  await mkdir(dir, { recursive: true })
  await chmod(dir, 0o755) // pgbouncer (as postgres) and nginx workers (as nobody) look inside
  const database = opts.database ?? 'govula_cluster'
  const replicaCount = opts.replicas ?? 3
  const started: Array<() => Promise<unknown>> = [] // undo steps, run in reverse on stop
  let stopped = false
  const stop = async () => {
    if (stopped) return
    stopped = true
    const errors: unknown[] = []
    for (const undo of started.reverse()) {
      try { await undo() } catch (err) { errors.push(err) }
    }
    if (errors.length) throw new AggregateError(errors, `cluster: ${errors.length} step(s) failed while stopping`)
  }

  try {
    // 1. Postgres: the machine's (or the given) server, else an embedded one.
    const pgServer = await resolvePostgres(opts, dir, log)
    if (pgServer.embedded) {
      const embedded: EmbeddedServer = pgServer.embedded
      started.push(() => embedded.stop())
    }
    const ownerPassword = opts.ownerPassword ?? pgServer.owner
    const appPassword = opts.appPassword ?? pgServer.app
    const { ownerUrl } = await provisionDatabase({
      adminUrl: pgServer.adminUrl, database, ownerPassword, appPassword, template: opts.template
    })
    if (opts.dropDatabaseOnStop) {
      started.push(async () => {
        const admin = new pg.Client({ connectionString: pgServer.adminUrl })
        await admin.connect()
        try { await admin.query(`DROP DATABASE IF EXISTS ${ident(database)} WITH (FORCE)`) } finally { await admin.end() }
      })
    }
    const admin = new pg.Client({ connectionString: pgServer.adminUrl })
    await admin.connect()
    try {
      await admin.query(
        `ALTER ROLE ${ident(APP_ROLE)} IN DATABASE ${ident(database)} SET statement_timeout = ${Number(opts.statementTimeoutMs ?? 10_000)}`)
    } finally {
      await admin.end()
    }
    const applied = await migrate(ownerUrl)
    if (applied.length) log(`migrated ${database}: ${applied.join(', ')}`)
    const directUrl = urlWith(pgServer.adminUrl, { user: APP_ROLE, password: appPassword, database })
    log(`postgres: ${new URL(pgServer.adminUrl).host}${pgServer.embedded ? ' (embedded)' : ''}, database ${database}`)

    // 2. PgBouncer and Redis.
    const statsPassword = randomBytes(12).toString('hex')
    const [bouncerStart, redisStart] = await Promise.allSettled([
      startPgBouncer(bins.pgbouncer!, dir, { database, serverUrl: pgServer.adminUrl, appPassword, statsPassword }),
      startRedis(bins.redis!, dir)
    ])
    // Whichever started is stopped with the rest, even if the other failed.
    if (bouncerStart.status === 'fulfilled') started.push(() => bouncerStart.value.service.stop('SIGINT', 5000))
    if (redisStart.status === 'fulfilled') started.push(() => redisStart.value.service.stop('SIGTERM', 5000))
    if (bouncerStart.status === 'rejected') throw bouncerStart.reason
    if (redisStart.status === 'rejected') throw redisStart.reason
    const bouncer = bouncerStart.value
    const redis = redisStart.value
    log(`pgbouncer: 127.0.0.1:${bouncer.port} (transaction pooling); redis: ${redis.url}`)

    // 3. Replicas.
    const command = opts.entry === 'dist'
      ? [process.execPath, path.join(ROOT, 'dist', 'server.js')]
      : [process.execPath, '--import', 'tsx', path.join(ROOT, 'server.ts')]
    if (opts.entry === 'dist' && !existsSync(command[1]!)) throw new Error('cluster: dist/server.js is missing: run `npm run build` first')
    const env = replicaEnv(opts, {
      HOST: '127.0.0.1',
      DATABASE_URL: bouncer.url,
      DATABASE_DIRECT_URL: directUrl,
      MIGRATION_DATABASE_URL: ownerUrl,
      REDIS_URL: redis.url,
      ENTITLEMENT_BROADCAST_ENABLED: 'true',
      // nginx, on 127.0.0.1 as the replicas are, is the one proxy that may name the client.
      TRUST_PROXY: '127.0.0.1',
      DB_STATEMENT_TIMEOUT: '0'
    })
    for (const key of Object.keys(opts.appEnv ?? {})) {
      if (!(key in ConfigSchema.properties)) throw new Error(`cluster: ${key} is not a setting of the service (config.ts)`)
    }
    const ports = await Promise.all(Array.from({ length: replicaCount }, () => freePort()))
    const onUnexpectedExit = opts.onUnexpectedExit ??
      ((r: Replica, reason: string) => log(`replica ${r.index} stopped unexpectedly: ${reason}`))
    const replicas = ports.map((port, i) => createReplica(i + 1, port, dir, command, env, onUnexpectedExit))
    started.push(() => Promise.all(replicas.map(r => r.stop())))
    await Promise.all(replicas.map(r => r.start()))
    log(`replicas: ${replicas.map(r => r.url).join(', ')}`)

    // 4. The balancer.
    const lbPort = opts.lbPort === 0 ? await freePort() : opts.lbPort ?? 8080
    const nginx = await startNginx(bins.nginx!, dir, lbPort, ports)
    started.push(() => nginx.service.stop('SIGQUIT', 5000))

    return {
      url: `http://127.0.0.1:${lbPort}`,
      dir,
      database,
      replicas,
      postgres: { adminUrl: pgServer.adminUrl, embedded: Boolean(pgServer.embedded), directUrl, ownerUrl },
      pgbouncer: { port: bouncer.port, url: bouncer.url, statsUrl: bouncer.statsUrl },
      redis: { url: redis.url },
      nginx: { port: lbPort, accessLog: nginx.accessLog },
      stop
    }
  } catch (err) {
    await stop().catch(() => {})
    throw err
  }
}
