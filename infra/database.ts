import type pg from 'pg'
import { isQueryTimeout } from '../errors.js'
import type { ContextSigner, RequestContext } from './request-context.js'

export type Queryable = Pick<pg.PoolClient, 'query'>

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

export function isUuid (value: unknown): value is string {
  return typeof value === 'string' && UUID.test(value)
}

/**
 * Runs fn in one tenant's transaction (db.withTenant bound to a tenant, or a request's).
 * `holding`: it runs on a connection the caller already holds (a request's held transaction),
 * so the caller must never wait on work that needs another pooled connection meanwhile.
 */
export type TenantRun = (<T>(fn: (client: pg.PoolClient) => Promise<T>) => Promise<T>) & { readonly holding?: boolean }

/** A transaction opened ahead of its first use, holding its pooled connection until it ends. */
export interface HeldTransaction {
  /** Runs fn in it and ends it: COMMIT, or ROLLBACK when fn throws. Null once it has ended. */
  run<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> | null
  /** Ends it with COMMIT unless run() already did. Idempotent. */
  end(): Promise<void>
  /** True once run() or end() has been called: its connection is back in the pool, or on its way. */
  readonly ended: boolean
}

/** Transactions over a pg pool, with the tenant context set for row-level security. */
export interface Database {
  readonly pool: pg.Pool
  query: pg.Pool['query']
  withTransaction<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T>
  withTenant<T>(tenantId: string, fn: (client: pg.PoolClient) => Promise<T>): Promise<T>
  /** A transaction in operator scope (app.operator = 'on'): what the RLS policies let an operator or a job see. */
  withOperator<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T>
  /** Signs the row-level security context (services/request-context.ts). */
  readonly context: ContextSigner
  /** Sets `context` for the rest of the caller's transaction (already BEGun on `client`). */
  setContext(client: Queryable, context: RequestContext): Promise<void>
  /**
   * Opens a transaction with `begin` (simple protocol: it may hold several statements and
   * must carry strictly validated literals only) and returns it held, with the results.
   */
  hold(begin: string): Promise<{ transaction: HeldTransaction, results: pg.QueryResult[] }>
  /**
   * Runs `statements`, a whole transaction from BEGIN to COMMIT, as one simple-protocol round
   * trip, and returns each statement's result. The same rule as hold(): literals only if
   * strictly validated.
   */
  batch(statements: string): Promise<pg.QueryResult[]>
}

const asList = (results: pg.QueryResult | pg.QueryResult[]) => Array.isArray(results) ? results : [results]

/**
 * Ends the transaction `err` interrupted: ROLLBACK, or nothing when the connection cannot take
 * one. Returns the error to release the connection with (destroying it), if any.
 */
async function abandon (client: pg.PoolClient, err: unknown): Promise<Error | undefined> {
  // A ROLLBACK would queue behind the unanswered statement and time out in its turn;
  // destroying the connection ends the transaction on the server all the same.
  if (isQueryTimeout(err)) return err as Error
  try {
    await client.query('ROLLBACK')
    return undefined
  } catch (rollbackErr) {
    // The connection itself failed: destroy it instead of returning it to the pool.
    return rollbackErr as Error
  }
}

export function createDatabase (pool: pg.Pool, context: ContextSigner): Database {
  /**
   * Runs fn on a checked-out client, then COMMIT (ROLLBACK when anything throws) and release.
   * `commit: false` when fn's own statements end the transaction.
   */
  async function within<T> (client: pg.PoolClient, fn: (client: pg.PoolClient) => Promise<T>, { commit = true } = {}): Promise<T> {
    let broken: Error | undefined
    try {
      const result = await fn(client)
      if (commit) await client.query('COMMIT')
      return result
    } catch (err) {
      broken = await abandon(client, err)
      throw err
    } finally {
      client.release(broken)
    }
  }

  async function run<T> (begin: string, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    return within(await pool.connect(), async (client) => {
      await client.query(begin)
      return fn(client)
    })
  }

  return {
    pool,
    query: pool.query.bind(pool) as pg.Pool['query'],
    // No context: also none that a statement may have left at session level on this pooled
    // connection (set_config(…, false)), which would otherwise apply here.
    withTransaction: (fn) => run("BEGIN; SELECT set_config('app.context', '', true)", fn),
    // The context is signed before a connection is taken: a service that has not read its key
    // yet refuses at once (503) instead of holding a connection for nothing.
    async withTenant (tenantId, fn) {
      // BEGIN and set_config travel as one simple-protocol round trip (round trips are the
      // hot path's cost, docs/performance.md). That is only safe with a literal we have
      // strictly validated: the signed context holds a UUID, hex digits and separators, never
      // a quote. `true` scopes the setting to this transaction, so the tenant never leaks to
      // the next user of the pooled connection.
      if (!isUuid(tenantId)) throw new TypeError('withTenant: tenantId must be a UUID')
      return run(`BEGIN; ${context.statement({ tenantId })}`, fn)
    },
    withOperator: async (fn) => run(`BEGIN; ${context.statement({ operator: true })}`, fn),
    context,
    async setContext (client, ctx) {
      await client.query(context.statement(ctx))
    },
    async hold (begin) {
      const client = await pool.connect()
      let ended = false
      let results: pg.QueryResult | pg.QueryResult[]
      try {
        results = await client.query(begin) as pg.QueryResult | pg.QueryResult[]
      } catch (err) {
        ended = true
        return within(client, () => Promise.reject(err))
      }
      const transaction: HeldTransaction = {
        run (fn) {
          if (ended) return null
          ended = true
          return within(client, fn)
        },
        async end () {
          if (ended) return
          ended = true
          await within(client, async () => undefined)
        },
        get ended () { return ended }
      }
      return { transaction, results: asList(results) }
    },
    // A statement that fails skips the rest, COMMIT included: within() then rolls back.
    batch: async (statements) => within(await pool.connect(),
      async (client) => asList(await client.query(statements) as pg.QueryResult | pg.QueryResult[]), { commit: false })
  }
}
