import type { Database } from './database.js'
import type { Logger } from './logger.js'
import { TenantBusyError } from './tenant-slots.js'

/**
 * Visits every tenant, in id order, for a job that works tenant by tenant. Tenants are listed
 * a page at a time in operator scope (each page its own short transaction); `visit` then
 * reaches the tenant's rows under that tenant's row-level security, which is all the runtime
 * role may do. Stops between tenants once `signal` aborts. Returns how many were visited.
 * A tenant whose requests hold its whole share of the pool (TenantBusyError, at any step of its
 * visit) is skipped until the next run, logged, rather than failing the job for every tenant after it.
 */
export async function eachTenant (
  db: Database, log: Logger, signal: AbortSignal, visit: (tenantId: string) => Promise<void>, pageSize = 500
): Promise<number> {
  let visited = 0
  let after = '00000000-0000-0000-0000-000000000000'
  while (!signal.aborted) {
    const page = await db.withOperator(async (c) => {
      const { rows } = await c.query<{ id: string }>('SELECT id FROM tenants WHERE id > $1 ORDER BY id LIMIT $2', [after, pageSize])
      return rows.map(r => r.id)
    })
    for (const tenantId of page) {
      if (signal.aborted) break
      after = tenantId
      visited++
      try {
        await visit(tenantId)
      } catch (err) {
        if (!(err instanceof TenantBusyError)) throw err
        log.warn({ tenantId }, 'job skipped a tenant whose share of the pool is busy; the next run takes it')
      }
    }
    if (page.length < pageSize) break
  }
  return visited
}
