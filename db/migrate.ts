import { createHash } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import path from 'node:path'
import pg from 'pg'

export interface Migration {
  version: number
  name: string
  file: string
  sql: string
  checksum: string
}

export interface MigrationLog {
  info(obj: object, msg: string): void
}

export class MigrationError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'MigrationError'
  }
}

export const MIGRATIONS_DIR = fileURLToPath(new URL('./migrations/', import.meta.url))
// One constant key for every replica: whoever holds it migrates, the others wait and then
// find nothing left to do.
const MIGRATION_LOCK_KEY = 727_001_001
const FILE_NAME = /^(\d{4})_([a-z0-9_]+)\.sql$/

const checksumOf = (sql: string) => createHash('sha256').update(sql).digest('hex')

/** The migrations on disk, in order. Misnamed files and duplicate versions are errors. */
export async function loadMigrations (dir = MIGRATIONS_DIR): Promise<Migration[]> {
  const files = (await readdir(dir)).filter(f => f.endsWith('.sql')).sort()
  const migrations: Migration[] = []
  for (const file of files) {
    const match = FILE_NAME.exec(file)
    if (!match) throw new MigrationError(`migration file ${file} must be named NNNN_snake_case_name.sql`)
    const version = Number(match[1])
    if (migrations.some(m => m.version === version)) throw new MigrationError(`two migrations share version ${match[1]}`)
    const sql = await readFile(path.join(dir, file), 'utf8')
    migrations.push({ version, name: match[2]!, file, sql, checksum: checksumOf(sql) })
  }
  return migrations
}

interface AppliedRow { version: number, checksum: string }

/**
 * Compares the database with the files: the migrations still to apply, or an error when an
 * applied migration's file was edited afterwards (forward-only: write a new migration).
 * Works for any role that can read schema_migrations, so readiness can call it too.
 */
export async function pendingMigrations (client: Pick<pg.ClientBase, 'query'>, migrations: Migration[]): Promise<Migration[]> {
  const exists = await client.query<{ t: string | null }>("SELECT to_regclass('public.schema_migrations')::text AS t")
  if (!exists.rows[0]?.t) return migrations
  const { rows } = await client.query<AppliedRow>('SELECT version, checksum FROM schema_migrations')
  const applied = new Map(rows.map(r => [r.version, r.checksum]))
  for (const m of migrations) {
    const sum = applied.get(m.version)
    if (sum !== undefined && sum !== m.checksum) {
      throw new MigrationError(`migration ${m.file} was edited after it was applied ` +
        `(checksum ${sum.slice(0, 12)}… in the database, ${m.checksum.slice(0, 12)}… on disk); ` +
        'migrations are forward-only: revert the edit and add a new migration')
    }
  }
  return migrations.filter(m => !applied.has(m.version))
}

/**
 * Applies pending migrations as the owner role, each in its own transaction, serialised
 * across processes by a session advisory lock (three replicas booting at once apply each
 * migration exactly once). Returns the files it applied.
 */
export async function migrate (connectionString: string, log?: MigrationLog, dir = MIGRATIONS_DIR): Promise<string[]> {
  const migrations = await loadMigrations(dir)
  const client = new pg.Client({ connectionString, application_name: 'govula-migrate' })
  client.on('error', () => {}) // a dropped connection surfaces as the failing query below
  await client.connect()
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_KEY])
    await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version integer PRIMARY KEY,
      name text NOT NULL,
      checksum text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`)
    const applied: string[] = []
    for (const m of await pendingMigrations(client, migrations)) {
      await client.query('BEGIN')
      try {
        await client.query(m.sql)
        await client.query('INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)', [m.version, m.name, m.checksum])
        await client.query('COMMIT')
      } catch (err) {
        await client.query('ROLLBACK').catch(() => {})
        throw new MigrationError(`migration ${m.file} failed: ${(err as Error).message}`)
      }
      log?.info({ migration: m.file }, 'migration applied')
      applied.push(m.file)
    }
    return applied
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY]).catch(() => {})
    await client.end().catch(() => {})
  }
}
