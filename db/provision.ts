import pg from 'pg'

export interface ProvisionOptions {
  /** A superuser (or CREATEROLE + CREATEDB) connection to the server's maintenance database. */
  adminUrl: string
  database: string
  ownerPassword: string
  appPassword: string
  /** Create `database` as a copy of this one (tests: an already-migrated template). */
  template?: string
}

export const OWNER_ROLE = 'govula_owner'
export const APP_ROLE = 'govula_app'
export const RUNTIME_GROUP = 'govula_runtime'

const ident = (s: string) => pg.Client.prototype.escapeIdentifier(s)
const literal = (s: string) => pg.Client.prototype.escapeLiteral(s)

function withDatabase (url: string, database: string, user?: string, password?: string) {
  const u = new URL(url)
  u.pathname = '/' + encodeURIComponent(database)
  if (user !== undefined) u.username = encodeURIComponent(user)
  if (password !== undefined) u.password = encodeURIComponent(password)
  return u.toString()
}

/** Creates the roles if absent (idempotent; roles are cluster-wide, so setting them up is too). */
export async function provisionRoles (admin: pg.Client, ownerPassword: string, appPassword: string) {
  // Concurrent provisioners (several test runs on one server) race on CREATE ROLE: serialise.
  await admin.query('SELECT pg_advisory_lock(727001000)')
  try {
    const ensure = async (role: string, attrs: string) => {
      const { rowCount } = await admin.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [role])
      await admin.query(`${rowCount ? 'ALTER' : 'CREATE'} ROLE ${ident(role)} ${attrs}`)
    }
    await ensure(RUNTIME_GROUP, 'NOLOGIN NOSUPERUSER NOBYPASSRLS')
    await ensure(OWNER_ROLE, `LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD ${literal(ownerPassword)}`)
    await ensure(APP_ROLE, `LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD ${literal(appPassword)}`)
    await admin.query(`GRANT ${ident(RUNTIME_GROUP)} TO ${ident(APP_ROLE)}`)
    // The pool's connections all log in as this role, which sees its own other connections'
    // statement text in pg_stat_activity (token hashes, signed contexts): don't record it.
    await admin.query(`ALTER ROLE ${ident(APP_ROLE)} SET track_activities = off`)
  } finally {
    await admin.query('SELECT pg_advisory_unlock(727001000)')
  }
}

/**
 * Sets up what a managed Postgres needs done once by hand (docs/operations.md): the owner
 * role that migrates, the runtime login the pool uses, and the database owned by the former.
 * Returns the two connection strings.
 */
export async function provisionDatabase (opts: ProvisionOptions) {
  const admin = new pg.Client({ connectionString: opts.adminUrl })
  await admin.connect()
  try {
    await provisionRoles(admin, opts.ownerPassword, opts.appPassword)
    const { rowCount } = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [opts.database])
    if (!rowCount) {
      const template = opts.template ? ` TEMPLATE ${ident(opts.template)}` : ''
      await admin.query(`CREATE DATABASE ${ident(opts.database)} OWNER ${ident(OWNER_ROLE)}${template}`)
    }
  } finally {
    await admin.end()
  }
  return {
    ownerUrl: withDatabase(opts.adminUrl, opts.database, OWNER_ROLE, opts.ownerPassword),
    runtimeUrl: withDatabase(opts.adminUrl, opts.database, APP_ROLE, opts.appPassword)
  }
}
