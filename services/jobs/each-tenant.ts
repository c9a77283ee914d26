import type { Database } from '../database.js'

/**
 * Visits every tenant, in id order, for a job that works tenant by tenant. Tenants are listed
 * a page at a time in operator scope (each page its own short transaction); `visit` then
 * reaches the tenant's rows under that tenant's row-level security, which is all the runtime
 * role may do. Stops between tenants once `signal` aborts. Returns how many were visited.
 */
export async function eachTenant (db: Database, signal: AbortSignal, visit: (tenantId: string) => Promise<void>, pageSize = 500): Promise<number> {
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
      await visit(tenantId)
    }
    if (page.length < pageSize) break
  }
  return visited
}
