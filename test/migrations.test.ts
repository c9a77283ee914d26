import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { cp, writeFile, appendFile } from 'node:fs/promises'
import path from 'node:path'
import { test } from 'node:test'
import pg from 'pg'
import { loadMigrations, migrate, MigrationError, MIGRATIONS_DIR, pendingMigrations } from '../db/migrate.js'
import { buildTestApp, createTestDatabase, queryOnce, tempDir, testConfig, waitFor } from './support/app.js'

/** A copy of the real migrations plus one whose side effect counts how often it ran. */
async function migrationsWithCounter () {
  const dir = await tempDir('govula-migrations-')
  await cp(MIGRATIONS_DIR, dir, { recursive: true })
  await writeFile(path.join(dir, '9001_counter.sql'), `
    CREATE TABLE IF NOT EXISTS migration_runs (n integer);
    INSERT INTO migration_runs VALUES (1);
    SELECT pg_sleep(0.2); -- widen the window in which a second runner could slip in
  `)
  return dir
}

test('applies every migration once and is idempotent', async () => {
  const db = await createTestDatabase({ empty: true })
  const all = await loadMigrations()
  const first = await migrate(db.ownerUrl)
  assert.deepEqual(first, all.map(m => m.file))
  assert.deepEqual(await migrate(db.ownerUrl), [])
  const rows = await queryOnce<{ version: number, checksum: string }>(
    db.ownerUrl, 'SELECT version, checksum FROM schema_migrations ORDER BY version')
  assert.deepEqual(rows.map(r => r.version), all.map(m => m.version))
  assert.deepEqual(rows.map(r => r.checksum), all.map(m => m.checksum))
})

test('three concurrent runners apply each migration exactly once', async () => {
  const db = await createTestDatabase({ empty: true })
  const dir = await migrationsWithCounter()
  const results = await Promise.all([1, 2, 3].map(() => migrate(db.ownerUrl, undefined, dir)))
  const appliedCounts = results.map(r => r.length).sort()
  assert.deepEqual(appliedCounts.slice(0, 2), [0, 0], 'two runners found nothing left to do')
  const [{ n }] = await queryOnce<{ n: number }>(db.ownerUrl, 'SELECT count(*)::int AS n FROM migration_runs') as [{ n: number }]
  assert.equal(n, 1)
})

test('an applied migration that was edited is refused with a clear error', async () => {
  const db = await createTestDatabase({ empty: true })
  const dir = await migrationsWithCounter()
  await migrate(db.ownerUrl, undefined, dir)
  await appendFile(path.join(dir, '9001_counter.sql'), '\nSELECT 1; -- an innocent-looking edit\n')
  await assert.rejects(migrate(db.ownerUrl, undefined, dir), (err: unknown) => {
    assert.ok(err instanceof MigrationError)
    assert.match(err.message, /9001_counter\.sql was edited after it was applied/)
    return true
  })
})

test('a comment corrected in an applied migration is not an edit; a database checksummed over whole files is carried over', async () => {
  const db = await createTestDatabase({ empty: true })
  const dir = await migrationsWithCounter()
  await migrate(db.ownerUrl, undefined, dir)
  await appendFile(path.join(dir, '9001_counter.sql'), '\n-- a corrected explanation\n\n')
  assert.deepEqual(await migrate(db.ownerUrl, undefined, dir), [], 'accepted, and nothing runs again')
  const [{ n }] = await queryOnce<{ n: number }>(db.ownerUrl, 'SELECT count(*)::int AS n FROM migration_runs') as [{ n: number }]
  assert.equal(n, 1)

  // A database migrated when the checksum covered the whole file: the released files' sums
  // are accepted, and migrate rewrites them to today's.
  const whole = await createTestDatabase({ empty: true })
  await migrate(whole.ownerUrl)
  const client = new pg.Client({ connectionString: whole.ownerUrl })
  await client.connect()
  try {
    const released = 'db19765b5109b3e262dd82647fc8718325d3a736d7d4857d05ec3248e0f88260' // 0005 as a whole file, before its comment fix
    await client.query('UPDATE schema_migrations SET checksum = $1 WHERE version = 5', [released])
    assert.deepEqual(await pendingMigrations(client, await loadMigrations()), [])
    assert.deepEqual(await migrate(whole.ownerUrl), [])
    const { rows: [row] } = await client.query('SELECT checksum FROM schema_migrations WHERE version = 5')
    assert.equal(row.checksum, (await loadMigrations()).find(m => m.version === 5)!.checksum)
    await client.query("UPDATE schema_migrations SET checksum = repeat('0', 64) WHERE version = 5")
    await assert.rejects(pendingMigrations(client, await loadMigrations()), /0005_recordings\.sql was edited after it was applied/)
  } finally {
    await client.end()
  }
})

test('a failing migration is rolled back whole and not recorded', async () => {
  const db = await createTestDatabase({ empty: true })
  const dir = await tempDir('govula-migrations-')
  await cp(MIGRATIONS_DIR, dir, { recursive: true })
  await writeFile(path.join(dir, '9002_broken.sql'), 'CREATE TABLE half_done (id int); SELECT * FROM no_such_table;')
  await assert.rejects(migrate(db.ownerUrl, undefined, dir), /9002_broken\.sql failed: relation "no_such_table" does not exist/)
  const [{ t }] = await queryOnce<{ t: string | null }>(db.ownerUrl, "SELECT to_regclass('half_done')::text AS t") as [{ t: string | null }]
  assert.equal(t, null)
  const client = new pg.Client({ connectionString: db.ownerUrl })
  await client.connect()
  const pending = await pendingMigrations(client, await loadMigrations(dir)).finally(() => client.end())
  assert.deepEqual(pending.map(m => m.file), ['9002_broken.sql'])
})

test('misnamed migration files are refused', async () => {
  const dir = await tempDir('govula-migrations-')
  await writeFile(path.join(dir, 'add_users.sql'), 'SELECT 1')
  await assert.rejects(loadMigrations(dir), /must be named NNNN_snake_case_name\.sql/)
})

test('the app migrates at boot, and readiness reports pending migrations when it may not', async () => {
  const db = await createTestDatabase({ empty: true })
  // MIGRATE_ON_BOOT=false: nothing applied, readiness says what is pending.
  const idle = await buildTestApp(testConfig(db, { MIGRATE_ON_BOOT: false }))
  const res = await idle.inject('/api/v1/health')
  assert.equal(res.statusCode, 503)
  const check = res.json().checks.find((c: { name: string }) => c.name === 'migrations')
  assert.equal(check.ok, false)
  assert.match(check.detail, /pending: 0001_runtime_role\.sql/)
  // The default: the app applies them (as the owner role) and becomes ready.
  const app = await buildTestApp(testConfig(db))
  const ready = await app.inject('/api/v1/health')
  assert.equal(ready.statusCode, 200, ready.body)
  // The first app's interval check now sees them applied too.
  await waitFor(async () => (await idle.inject('/api/v1/health')).statusCode === 200, { what: 'readiness after migration' })
})

test('npm run migrate applies migrations from the command line', async () => {
  const db = await createTestDatabase({ empty: true })
  const run = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/migrate.ts'], {
    env: { PATH: process.env.PATH, MIGRATION_DATABASE_URL: db.ownerUrl, DATABASE_URL: db.runtimeUrl },
    encoding: 'utf8'
  })
  assert.equal(run.status, 0, run.stderr)
  assert.match(run.stdout, /0001_runtime_role\.sql/)
  const again = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/migrate.ts'], {
    env: { PATH: process.env.PATH, MIGRATION_DATABASE_URL: db.ownerUrl, DATABASE_URL: db.runtimeUrl },
    encoding: 'utf8'
  })
  assert.equal(again.status, 0, again.stderr)
  assert.match(again.stdout, /up to date/)
})
