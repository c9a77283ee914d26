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

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex')
/**
 * A migration's checksum covers what it runs, not how it is explained: lines that are only a
 * comment, blank lines and trailing spaces do not count, so a comment can be corrected in an
 * applied migration while any change to a statement is still refused.
 */
export const checksumOf = (sql: string) =>
  sha256(sql.split('\n').map(l => l.trimEnd()).filter(l => l !== '' && !/^\s*--/.test(l)).join('\n'))

// Until the checksum left comments out, it covered the whole file. A database migrated then
// holds these (the files as they were); each is accepted once and rewritten by the next migrate.
const WHOLE_FILE_CHECKSUMS: Readonly<Record<number, string>> = {
  1: '7927d0b7f3a33ce758304dcf21634af47c768a709a14c1dac9811a5fff06eb41',
  2: '0c621a7ccc77556beefd6ede9528337d66ecd0d329e52c3eea78568e84437bd8',
  3: '193769c0a3099ebfa5c989312145f44cb443bc0a12bc2e70da9c9dca902fb7c5',
  4: '00ffaa1b7352e796e2e44206fee6bbad5f738e728cf9d32d9d558c49f667d4f3',
  5: 'db19765b5109b3e262dd82647fc8718325d3a736d7d4857d05ec3248e0f88260',
  6: '1692369d1fbd22efd1c9c6e0957a3990e469026cf52b1dd6459e440998b73c2d',
  7: '14b2d0e21ee1fe79ca195c0500b4be5cf88e40f02c27882d5b34380f1d963fb3',
  8: 'fa496594d7d619529d7cd482d796693fd2680cc11f26168f545743c11238af19',
  9: 'c2b67291b913730bc658059855959648ff835fcef1c29dd94d5ce61c99a65d0b',
  10: '9a4ed7e2e42bb9ce59474f620433d05607a44887d04bdeb21c3b56b21cc73e3f',
  12: '45cd1a3994abaccba1e24ccff298fdb185ce0558c0cbeb9634bc214cfc004ca8',
  13: 'ffbd34400c14b4afc6b38332f0fa988a82516395b8dcd46d3bdc8a2ace1eb895'
}
/** Whether a stored checksum vouches for `m`: today's, or the whole-file one of its release. */
const matches = (m: Migration, stored: string) => stored === m.checksum || stored === WHOLE_FILE_CHECKSUMS[m.version]

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
    if (sum !== undefined && !matches(m, sum)) {
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
    const pending = await pendingMigrations(client, migrations)
    // Whole-file checksums of the applied ones become today's (pendingMigrations accepted them).
    for (const m of migrations) {
      if (pending.includes(m)) continue
      await client.query('UPDATE schema_migrations SET checksum = $2 WHERE version = $1 AND checksum <> $2', [m.version, m.checksum])
    }
    for (const m of pending) {
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
