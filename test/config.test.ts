import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { test } from 'node:test'
import { ConfigError, ConfigSchema, databaseUrls, loadConfig, queryTimeoutMs } from '../config.js'

test('defaults are the documented ones', () => {
  const c = loadConfig({})
  assert.equal(c.PORT, 3000)
  assert.equal(c.HOST, '0.0.0.0')
  assert.equal(c.DATABASE_URL, undefined)
  assert.equal(c.DB_MAX_CONNECTIONS, 20)
  assert.equal(c.DB_IDLE_TIMEOUT, 30000)
  assert.equal(c.DB_CONNECTION_TIMEOUT, 5000)
  assert.equal(c.REDIS_URL, undefined)
  assert.equal(c.ENTITLEMENT_CACHE_TTL_MS, 60000)
  assert.equal(c.ENTITLEMENT_BROADCAST_ENABLED, false)
  assert.equal(c.ENABLE_SCHEDULER, false)
  assert.equal(c.ENABLE_INTERNAL_CRON, false)
  assert.equal(c.CRON_SECRET, undefined)
  assert.equal(c.LOG_LEVEL, 'info')
  assert.equal(c.DATA_DIR, '.data')
  assert.equal(c.MIGRATE_ON_BOOT, true)
  assert.ok(Object.isFrozen(c))
})

test('every documented variable has a place in the schema', () => {
  for (const key of ['PORT', 'HOST', 'DATABASE_URL', 'DATABASE_DIRECT_URL', 'MIGRATION_DATABASE_URL', 'DB_MAX_CONNECTIONS',
    'DB_IDLE_TIMEOUT', 'DB_CONNECTION_TIMEOUT', 'REDIS_URL', 'ENTITLEMENT_CACHE_TTL_MS', 'ENTITLEMENT_BROADCAST_ENABLED',
    'ENABLE_SCHEDULER', 'ENABLE_INTERNAL_CRON', 'CRON_SECRET', 'LOG_LEVEL']) {
    assert.ok(key in ConfigSchema.properties, key)
  }
})

test('values are parsed from strings; empty means unset', () => {
  const c = loadConfig({
    PORT: '8080',
    DB_MAX_CONNECTIONS: '7',
    ENABLE_SCHEDULER: '1',
    ENTITLEMENT_BROADCAST_ENABLED: 'true',
    MIGRATE_ON_BOOT: 'false',
    REDIS_URL: ''
  })
  assert.equal(c.PORT, 8080)
  assert.equal(c.DB_MAX_CONNECTIONS, 7)
  assert.equal(c.ENABLE_SCHEDULER, true)
  assert.equal(c.ENTITLEMENT_BROADCAST_ENABLED, true)
  assert.equal(c.MIGRATE_ON_BOOT, false)
  assert.equal(c.REDIS_URL, undefined)
})

test('database URLs fall back to DATABASE_URL', () => {
  const c = loadConfig({ DATABASE_URL: 'postgres://a@h/db' })
  assert.deepEqual(databaseUrls(c), { runtime: 'postgres://a@h/db', direct: 'postgres://a@h/db', migration: 'postgres://a@h/db' })
})

test('the client-side query timeout sits 1 s above the statement timeout unless set', () => {
  assert.equal(loadConfig({}).DB_QUERY_TIMEOUT, undefined)
  assert.equal(queryTimeoutMs(loadConfig({})), 11_000)
  assert.equal(queryTimeoutMs(loadConfig({ DB_STATEMENT_TIMEOUT: '500' })), 1_500)
  // PgBouncer: no startup statement_timeout, the role carries one; the client still bounds the wait.
  assert.equal(queryTimeoutMs(loadConfig({ DB_STATEMENT_TIMEOUT: '0' })), 11_000)
  assert.equal(queryTimeoutMs(loadConfig({ DB_QUERY_TIMEOUT: '3000' })), 3_000)
  assert.equal(queryTimeoutMs(loadConfig({ DB_QUERY_TIMEOUT: '0' })), 0)
})

const bad: Array<[Record<string, string>, string, RegExp]> = [
  [{ DB_MAX_CONNECTIONS: 'abc' }, 'DB_MAX_CONNECTIONS', /integer/],
  [{ DB_MAX_CONNECTIONS: '0' }, 'DB_MAX_CONNECTIONS', /greater or equal to 1/],
  [{ PORT: '70000' }, 'PORT', /65535/],
  [{ ENABLE_SCHEDULER: 'maybe' }, 'ENABLE_SCHEDULER', /boolean/],
  [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL', /loud/],
  [{ DATABASE_URL: 'not a url' }, 'DATABASE_URL', /not a valid URL/],
  [{ DATABASE_URL: 'mysql://u@h/db' }, 'DATABASE_URL', /postgres:\/\//],
  [{ MIGRATION_DATABASE_URL: 'postgres://' }, 'MIGRATION_DATABASE_URL', /host|valid/],
  [{ AUDIT_SIGNING_KEY: 'too-short-to-be-a-seed' }, 'AUDIT_SIGNING_KEY', /32-byte Ed25519 seed/]
]
for (const [env, variable, reason] of bad) {
  test(`a bad ${variable} (${JSON.stringify(env[variable])}) is refused, naming the variable`, () => {
    assert.throws(() => loadConfig(env), (err: unknown) => {
      assert.ok(err instanceof ConfigError)
      assert.equal(err.variable, variable)
      assert.match(err.message, new RegExp(`^invalid configuration: ${variable} `))
      assert.match(err.message, reason)
      assert.ok(!err.message.includes('too-short-to-be-a-seed'), 'a secret is never echoed')
      return true
    })
  })
}

test('the server stops before listening on a bad value, with one line and a non-zero exit', async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'server.ts'], {
    env: { PATH: process.env.PATH, DB_MAX_CONNECTIONS: 'abc', PORT: '0' },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const code = await new Promise<number | null>(resolve => child.on('exit', resolve))
  assert.notEqual(code, 0)
  assert.equal(stdout, '')
  const lines = stderr.trim().split('\n')
  assert.equal(lines.length, 1, stderr)
  assert.match(lines[0]!, /^invalid configuration: DB_MAX_CONNECTIONS must be an integer/)
})

test('a refused secret is named, never quoted: the error says why and how long the value was, not what it was', () => {
  assert.throws(() => loadConfig({ OPERATOR_BOOTSTRAP_PASSWORD: 'hunter2' }), (err: Error) =>
    err instanceof ConfigError && /OPERATOR_BOOTSTRAP_PASSWORD/.test(err.message) && /7 characters/.test(err.message) &&
    !err.message.includes('hunter2'))
  // Other values are quoted, to show what was wrong.
  assert.throws(() => loadConfig({ PORT: 'eighty' }), /eighty/)
})

test('.env.example lists every setting once, with its default', async () => {
  const { readFile } = await import('node:fs/promises')
  const text = await readFile(new URL('../.env.example', import.meta.url), 'utf8')
  const listed = [...text.matchAll(/^# ([A-Z][A-Z0-9_]+)=(.*)$/gm)].map(([, key, value]) => [key!, value!] as const)
  assert.deepEqual(listed.map(([key]) => key).sort(), Object.keys(ConfigSchema.properties).sort())
  for (const [key, value] of listed) {
    const d = (ConfigSchema.properties as Record<string, { default?: unknown }>)[key]!.default
    assert.equal(value, d === undefined ? '' : String(d), key)
  }
})

test('a setting with a fixed set of values names them when it is given another', () => {
  assert.throws(() => loadConfig({ LOG_LEVEL: 'loud' }),
    (err: Error) => err instanceof ConfigError && err.message.includes('LOG_LEVEL must be one of "fatal", "error", "warn", "info"') &&
      err.message.includes('(got "loud")'))
  assert.throws(() => loadConfig({ NODE_ENV: 'prod' }), /NODE_ENV must be one of "development", "production", "test" \(got "prod"\)/)
})
