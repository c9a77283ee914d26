import { randomBytes } from 'node:crypto'
import { PassThrough } from 'node:stream'
import { after } from 'node:test'
import pg from 'pg'
import { buildApp, type App } from '../app.js'
import { loadConfig, type Config } from '../config.js'
import { APP_ROLE, OWNER_ROLE } from '../db/provision.js'
import { createDatabase, type Database } from '../infra/database.js'
import { createContextSigner, loadContextKey } from '../infra/request-context.js'

function env (name: string): string {
  const value = process.env[name]
  if (!value) throw new Error(`${name} is not set: run the tests through \`npm test\` (test/run.ts starts their Postgres)`)
  return value
}

function urlFor (database: string, user?: string, password?: string) {
  const u = new URL(env('TEST_ADMIN_URL'))
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
  const name = `${env('TEST_TEMPLATE_DB')}_${randomBytes(4).toString('hex')}`
  const admin = new pg.Client({ connectionString: env('TEST_ADMIN_URL') })
  await admin.connect()
  const template = opts.empty ? '' : ` TEMPLATE "${env('TEST_TEMPLATE_DB')}"`
  await admin.query(`CREATE DATABASE "${name}" OWNER ${OWNER_ROLE}${template}`)
  await admin.end()
  after(async () => {
    const c = new pg.Client({ connectionString: env('TEST_ADMIN_URL') })
    await c.connect()
    await c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)
    await c.end()
  })
  return {
    name,
    runtimeUrl: urlFor(name, APP_ROLE, env('TEST_APP_PASSWORD')),
    ownerUrl: urlFor(name, OWNER_ROLE, env('TEST_OWNER_PASSWORD')),
    adminUrl: urlFor(name)
  }
}

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

/**
 * Builds the app the way production does and closes it when the file ends. `setup` runs
 * before `ready()`, so a test can add routes of its own.
 */
export async function buildTestApp (config: Config, opts: { logs?: LogCapture, setup?: (app: App) => void | Promise<void>, autoClose?: boolean } = {}) {
  const app = await buildApp(config, { logStream: opts.logs?.stream })
  await opts.setup?.(app)
  await app.ready()
  await app.readiness.refresh() // readiness's first round (it runs in the background at boot)
  if (opts.autoClose !== false) after(() => app.close())
  return app
}

/** Polls `fn` until it returns a truthy value, failing after `timeoutMs`: no bare sleeps. */
export async function waitFor<T> (fn: () => Promise<T> | T, { timeoutMs = 5000, intervalMs = 25, what = 'condition' } = {}): Promise<NonNullable<T>> {
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

/** A superuser connection to the test database (to read hashes and move timestamps), ended after the file. */
export async function adminClient (db: TestDatabase) {
  const client = new pg.Client({ connectionString: db.adminUrl })
  client.on('error', () => {}) // the database is dropped WITH (FORCE) at the end
  await client.connect()
  after(() => client.end())
  return client
}

/**
 * The transaction helpers over a pool of the runtime login, signing contexts as the service
 * does (the key read through the owner role): for tests below the HTTP layer.
 */
export async function runtimeDatabase (db: TestDatabase, pool: pg.Pool): Promise<Database> {
  return createDatabase(pool, await loadContextKey(createContextSigner(), db.ownerUrl))
}
