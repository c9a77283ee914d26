// Shared by the baselines: the port, the pool, and the tenant read they all perform (the
// same statement as services/tenants.ts's members()).
import pg from 'pg'
import { createContextSigner, loadContextKey } from '../../infra/request-context.js'

export const port = Number(process.env.PORT ?? 3100)
export const host = process.env.HOST ?? '127.0.0.1'

export const MEMBERS_SQL = 'SELECT m.user_id AS "userId", u.email, m.role FROM memberships m JOIN users u ON u.id = m.user_id ' +
  'WHERE m.tenant_id = $1 ORDER BY m.created_at, u.email'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
export const isUuid = (v: unknown): v is string => typeof v === 'string' && UUID.test(v)

/** The runtime role's pool (DATABASE_URL), sized like the service's (DB_MAX_CONNECTIONS). */
export function createPool () {
  if (!process.env.DATABASE_URL) throw new Error('DATABASE_URL is required')
  const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: Number(process.env.DB_MAX_CONNECTIONS ?? 20) })
  pool.on('error', () => {})
  return pool
}

// Row-level security believes only a signed context (infra/request-context.ts): the
// baselines sign theirs with the same key, read once through the owner role, so that they do
// the same work per read as the service.
if (!process.env.MIGRATION_DATABASE_URL) throw new Error('MIGRATION_DATABASE_URL is required (the context key is read through it)')
const signer = await loadContextKey(createContextSigner(), process.env.MIGRATION_DATABASE_URL)

export interface Member { userId: string, email: string, role: string }

/** BEGIN; set_config; SELECT; COMMIT as four round trips (bound parameters). */
export async function readFourRoundTrips (pool: pg.Pool, tenantId: string): Promise<Member[]> {
  const client = await pool.connect()
  let broken: Error | undefined
  try {
    await client.query('BEGIN')
    await client.query("SELECT set_config('app.context', $1, true)", [signer.sign({ tenantId })])
    const { rows } = await client.query<Member>(MEMBERS_SQL, [tenantId])
    await client.query('COMMIT')
    return rows
  } catch (err) {
    await client.query('ROLLBACK').catch((e: Error) => { broken = e })
    throw err
  } finally {
    client.release(broken)
  }
}

/**
 * The same work as one round trip: a multi-statement simple query. Only safe because the
 * tenant id is a strictly validated UUID (it cannot carry a quote).
 */
export async function readOneRoundTrip (pool: pg.Pool, tenantId: string): Promise<Member[]> {
  if (!isUuid(tenantId)) throw new TypeError('tenant id must be a UUID')
  const client = await pool.connect()
  let broken: Error | undefined
  try {
    const sql = `BEGIN; ${signer.statement({ tenantId })}; ${MEMBERS_SQL.replace('$1', `'${tenantId}'`)}; COMMIT`
    const results = await client.query(sql) as unknown as pg.QueryResult<Member>[]
    return results[2]!.rows
  } catch (err) {
    // A failed statement leaves the transaction open: the connection is not reused.
    broken = err as Error
    throw err
  } finally {
    client.release(broken)
  }
}

/** Stops listening and ends the pool on SIGTERM/SIGINT. */
export function closeOn (close: () => Promise<unknown>) {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => { close().finally(() => process.exit(0)) })
  }
}
