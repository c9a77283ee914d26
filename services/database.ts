import type pg from 'pg'

export type Queryable = Pick<pg.PoolClient, 'query'>

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

export function isUuid (value: unknown): value is string {
  return typeof value === 'string' && UUID.test(value)
}

/** Transactions over a pg pool, with the tenant context set for row-level security. */
export interface Database {
  readonly pool: pg.Pool
  query: pg.Pool['query']
  withTransaction<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T>
  withTenant<T>(tenantId: string, fn: (client: pg.PoolClient) => Promise<T>): Promise<T>
  /** A transaction in operator scope (app.operator = 'on'): what the RLS policies let an operator or a job see. */
  withOperator<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T>
}

export function createDatabase (pool: pg.Pool): Database {
  async function run<T> (begin: string, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await pool.connect()
    let broken: Error | undefined
    try {
      await client.query(begin)
      const result = await fn(client)
      await client.query('COMMIT')
      return result
    } catch (err) {
      try {
        await client.query('ROLLBACK')
      } catch (rollbackErr) {
        // The connection itself failed: destroy it instead of returning it to the pool.
        broken = rollbackErr as Error
      }
      throw err
    } finally {
      client.release(broken)
    }
  }

  return {
    pool,
    query: pool.query.bind(pool) as pg.Pool['query'],
    withTransaction: (fn) => run('BEGIN', fn),
    withTenant (tenantId, fn) {
      // BEGIN and set_config travel as one simple-protocol round trip (round trips are the
      // hot path's cost, see PERFORMANCE-NOTES). That is only safe with a literal we have
      // strictly validated: a UUID cannot carry a quote. `true` scopes the setting to this
      // transaction, so the tenant never leaks to the next user of the pooled connection.
      if (!isUuid(tenantId)) return Promise.reject(new TypeError('withTenant: tenantId must be a UUID'))
      return run(`BEGIN; SELECT set_config('app.tenant_id', '${tenantId}', true)`, fn)
    },
    withOperator: (fn) => run("BEGIN; SELECT set_config('app.operator', 'on', true)", fn)
  }
}
