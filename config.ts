import { createAuditSigner } from './infra/audit-signer.js'
import { parseTrustProxy } from './infra/client-address.js'
import { parseCorsOrigins } from './infra/cors-origins.js'
import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'

// Every environment variable the service reads, in one schema. Keys are the variable
// names themselves, so an error message names exactly what the operator has to fix.
const Int = (def: number, min: number, max = Number.MAX_SAFE_INTEGER) =>
  Type.Integer({ default: def, minimum: min, maximum: max })
const Bool = (def: boolean) => Type.Boolean({ default: def })
const PostgresUrl = Type.String({ minLength: 1, description: 'postgres:// URL' })

export const ConfigSchema = Type.Object({
  NODE_ENV: Type.Union([Type.Literal('development'), Type.Literal('production'), Type.Literal('test')], { default: 'development' }),
  PORT: Int(3000, 0, 65535),
  HOST: Type.String({ default: '0.0.0.0', minLength: 1 }),
  METRICS_ENABLED: Bool(false),
  METRICS_PORT: Int(0, 0, 65535),
  // /metrics on the public port (no auth) only when asked for; otherwise METRICS_PORT is needed to serve it.
  METRICS_PUBLIC: Bool(false),
  /** Browser origins allowed to call the API (infra/cors-origins.ts); empty: no CORS. */
  CORS_ORIGINS: Type.Optional(Type.String()),
  LOG_LEVEL: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map(l => Type.Literal(l)), { default: 'info' }),

  DATABASE_URL: Type.Optional(PostgresUrl),
  DATABASE_DIRECT_URL: Type.Optional(PostgresUrl),
  MIGRATION_DATABASE_URL: Type.Optional(PostgresUrl),
  DB_MAX_CONNECTIONS: Int(20, 1, 1000),
  DB_IDLE_TIMEOUT: Int(30_000, 0),
  DB_CONNECTION_TIMEOUT: Int(5_000, 1),
  DB_STATEMENT_TIMEOUT: Int(10_000, 0),
  // Client-side bound on one statement's round trip; unset: see queryTimeoutMs.
  DB_QUERY_TIMEOUT: Type.Optional(Type.Integer({ minimum: 0 })),
  // A tenant's share of the pool, so one tenant's slow reads cannot starve the others; unset: half of DB_MAX_CONNECTIONS.
  DB_TENANT_MAX_CONNECTIONS: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
  // How long a request over its tenant's share waits for one of the tenant's connections before a 429; unset: DB_CONNECTION_TIMEOUT.
  DB_TENANT_QUEUE_TIMEOUT_MS: Type.Optional(Type.Integer({ minimum: 0 })),
  MIGRATE_ON_BOOT: Bool(true),

  DATA_DIR: Type.String({ default: '.data', minLength: 1 }),
  EMBEDDED_PG_PORT: Int(54329, 1, 65535),

  READINESS_CHECK_INTERVAL_MS: Int(2_000, 50),
  SHUTDOWN_TIMEOUT_MS: Int(10_000, 100),
  SHUTDOWN_DRAIN_DELAY_MS: Int(0, 0),
  BODY_LIMIT: Int(1_048_576, 1024),
  // Which proxies may name the client (X-Forwarded-For): false, a hop count, or their IPs/CIDRs;
  // `true` is refused at boot, as it lets the client pick its own address (services/client-address.ts).
  TRUST_PROXY: Type.Union([Type.Literal(false), Type.Integer({ minimum: 1 }), Type.String({ minLength: 1 })], { default: false }),

  ACCESS_TOKEN_TTL_S: Int(900, 10),
  REFRESH_TOKEN_TTL_S: Int(30 * 24 * 3600, 60),
  REFRESH_IDLE_TIMEOUT_S: Int(7 * 24 * 3600, 60),
  REFRESH_REUSE_GRACE_S: Int(10, 0, 300),
  ARGON2_MEMORY_KIB: Int(19_456, 19_456),
  ARGON2_TIME_COST: Int(2, 2),
  ARGON2_PARALLELISM: Int(1, 1, 16),
  ARGON2_MAX_CONCURRENCY: Int(4, 1, 64),
  // Failed credential checks on one email in an hour (OWASP ASVS: at most 100); past it only clients that failed there are refused.
  LOGIN_MAX_FAILURES_PER_HOUR: Int(100, 1),
  // Failures one client address (an IPv6 /64) may make on one email in its hour before it alone is refused there.
  LOGIN_MAX_FAILURES_PER_CLIENT: Int(10, 1),
  // The wait of a client with no failures while its email is past LOGIN_MAX_FAILURES_PER_HOUR: slows, never locks out.
  LOGIN_CEILING_DELAY_MS: Int(1000, 0, 10_000),
  // Live sessions per user; a login past it revokes the oldest (a stolen password cannot pile up sessions).
  MAX_SESSIONS_PER_USER: Int(50, 1, 10_000),
  RATE_LIMIT_MAX: Int(1200, 1),
  RATE_LIMIT_WINDOW: Int(60_000, 1000),
  AUTH_RATE_LIMIT_MAX: Int(20, 1),
  AUTH_RATE_LIMIT_WINDOW_MS: Int(60_000, 1000),
  AUTH_RATE_LIMIT_FALLBACK_MAX: Int(10, 1),
  // Percent of a tenant's api_requests_per_minute one user may spend, so one member cannot starve the rest.
  TENANT_RATE_LIMIT_USER_SHARE: Int(50, 1, 100),
  // Wrong cron secrets per client IP per minute before 429: a secret guesser gets a handful, not the general limit.
  CRON_AUTH_FAILURES_PER_MINUTE: Int(5, 1),
  REDIS_COMMAND_TIMEOUT_MS: Int(100, 10),
  OPERATOR_BOOTSTRAP_EMAIL: Type.Optional(Type.String({ minLength: 3 })),
  OPERATOR_BOOTSTRAP_PASSWORD: Type.Optional(Type.String({ minLength: 8 })),

  REDIS_URL: Type.Optional(Type.String({ minLength: 1 })),
  ENTITLEMENT_CACHE_TTL_MS: Int(60_000, 0),
  ENTITLEMENT_BROADCAST_ENABLED: Bool(false),
  PAST_DUE_GRACE_DAYS: Int(7, 0, 365),
  ENABLE_SCHEDULER: Bool(false),
  JOB_PURGE_SESSIONS_INTERVAL_S: Int(3600, 1),
  JOB_LIFECYCLE_INTERVAL_S: Int(60, 1),
  JOB_PURGE_RECORDINGS_INTERVAL_S: Int(3600, 1),
  JOB_AUDIT_CHECKPOINT_INTERVAL_S: Int(3600, 1),
  JOB_SHUTDOWN_DEADLINE_MS: Int(5000, 0),
  ENABLE_INTERNAL_CRON: Bool(false),
  CRON_SECRET: Type.Optional(Type.String({ minLength: 1 })),
  // Ed25519 key that signs audit checkpoints (docs/audit.md): a 32-byte seed (base64,
  // base64url or hex; `openssl rand -base64 32`) or a PKCS#8 PEM. Outside production a
  // public development key stands in; production without one has no checkpoints.
  AUDIT_SIGNING_KEY: Type.Optional(Type.String({ minLength: 1 })),

  // Recording ingest (docs/recording.md): a batch over these is refused whole.
  RECORDING_MAX_BATCH_EVENTS: Int(500, 1, 10_000),
  RECORDING_MAX_BATCH_BYTES: Int(524_288, 1024, 16_777_216),
  RECORDING_MAX_PAYLOAD_BYTES: Int(16_384, 64, 1_048_576)
})

export type Config = Readonly<Static<typeof ConfigSchema>>

export class ConfigError extends Error {
  constructor (readonly variable: string, readonly reason: string) {
    super(`invalid configuration: ${variable} ${reason}`)
    this.name = 'ConfigError'
  }
}

// Accepted spellings of booleans in the environment: ENABLE_SCHEDULER=1 is written as often as =true.
const TRUE = new Set(['1', 'true', 'yes', 'on'])
const FALSE = new Set(['0', 'false', 'no', 'off'])

function coerce (key: string, schema: TSchema, raw: string): unknown {
  if (schema.type === 'integer') {
    if (!/^-?\d+$/.test(raw.trim())) throw new ConfigError(key, `must be an integer, got ${JSON.stringify(raw)}`)
    return Number(raw)
  }
  if (schema.type === 'boolean') {
    const v = raw.trim().toLowerCase()
    if (TRUE.has(v)) return true
    if (FALSE.has(v)) return false
    throw new ConfigError(key, `must be a boolean (true/false/1/0), got ${JSON.stringify(raw)}`)
  }
  return raw
}

function checkPostgresUrl (key: string, value: string | undefined) {
  if (value === undefined) return
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw new ConfigError(key, 'is not a valid URL (expected postgres://user:password@host:port/database)')
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
    throw new ConfigError(key, `must use the postgres:// scheme, got ${url.protocol}`)
  }
  if (url.hostname === '' && !url.searchParams.has('host')) throw new ConfigError(key, 'has no host')
}

/**
 * Builds the typed, frozen config from an environment-like object. Pure: tests pass a
 * plain object and never touch process.env. Unset and empty variables take their defaults.
 */
export function loadConfig (env: Record<string, string | undefined> = process.env, overrides: Partial<Config> = {}): Config {
  const input: Record<string, unknown> = {}
  for (const [key, schema] of Object.entries(ConfigSchema.properties)) {
    const raw = env[key]
    if (raw !== undefined && raw !== '') input[key] = coerce(key, schema as TSchema, raw)
  }
  Object.assign(input, overrides)
  const cors = parseCorsOrigins(input.CORS_ORIGINS as string | undefined)
  if ('error' in cors) throw new ConfigError('CORS_ORIGINS', cors.error)
  const trustProxy = parseTrustProxy(input.TRUST_PROXY)
  if ('error' in trustProxy) throw new ConfigError('TRUST_PROXY', trustProxy.error)
  input.TRUST_PROXY = trustProxy.value
  const withDefaults = Value.Default(ConfigSchema, input)
  const first = Value.Errors(ConfigSchema, withDefaults).First()
  if (first) {
    const key = first.path.replace(/^\//, '') || '(config)'
    // A secret's value never reaches the message (it goes to logs and terminals).
    const got = /SECRET|PASSWORD|KEY|_URL$/.test(key) ? `a value of ${String(first.value).length} characters` : JSON.stringify(first.value)
    // A union of literals (NODE_ENV, LOG_LEVEL) says which values it takes, not "expected union value".
    const schema = (ConfigSchema.properties as Record<string, TSchema>)[key]
    const choices = (schema?.anyOf as TSchema[] | undefined)?.every(s => 'const' in s)
      ? (schema!.anyOf as TSchema[]).map(s => JSON.stringify(s.const)).join(', ')
      : null
    const reason = choices ? `must be one of ${choices}` : first.message.replace(/^Expected/, 'expected')
    throw new ConfigError(key, `${reason} (got ${got})`)
  }
  const config = withDefaults as Static<typeof ConfigSchema>
  for (const key of ['DATABASE_URL', 'DATABASE_DIRECT_URL', 'MIGRATION_DATABASE_URL'] as const) {
    checkPostgresUrl(key, config[key])
  }
  if (config.AUDIT_SIGNING_KEY) {
    try {
      createAuditSigner(config.AUDIT_SIGNING_KEY)
    } catch (err) {
      // The message names the accepted forms, never the key itself.
      throw new ConfigError('AUDIT_SIGNING_KEY', (err as Error).message.replace(/^AUDIT_SIGNING_KEY /, ''))
    }
  }
  return Object.freeze(config)
}

/**
 * How long the pool waits for the answer to one statement before it gives the connection up.
 * statement_timeout is enforced by Postgres on statements it is running, so it cannot bound a
 * network that is slow or stalled: this client-side timer does. It sits 1 s above the server's
 * timer so that, when Postgres itself is slow, Postgres's clean cancel (which keeps the
 * connection) wins. With DB_STATEMENT_TIMEOUT=0 (PgBouncer: the timeout lives on the role)
 * the default is 11 s, above the 10 s the cluster sets there. 0 disables it.
 */
export function queryTimeoutMs (config: Config): number {
  if (config.DB_QUERY_TIMEOUT !== undefined) return config.DB_QUERY_TIMEOUT
  return (config.DB_STATEMENT_TIMEOUT || 10_000) + 1000
}

/** The three connection strings, each falling back to DATABASE_URL (docs/operations.md). */
export function databaseUrls (config: Config) {
  if (!config.DATABASE_URL) {
    throw new ConfigError('DATABASE_URL', 'is required here (server.ts fills it with the embedded Postgres when unset)')
  }
  return {
    runtime: config.DATABASE_URL,
    direct: config.DATABASE_DIRECT_URL ?? config.DATABASE_URL,
    migration: config.MIGRATION_DATABASE_URL ?? config.DATABASE_URL
  }
}
