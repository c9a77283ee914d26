import type { Database } from '../database.js'

/**
 * Deletes dead session families in bounded batches: revoked ones, and those past their
 * absolute or idle expiry. A family goes whole: its spent rows are what detects a replayed
 * refresh token, so they stay while the family lives.
 */
export async function purgeSessions ({ db }: { db: Database }, signal: AbortSignal, { batchSize = 1000 } = {}) {
  let deleted = 0
  while (!signal.aborted) {
    const count = await db.withOperator(async (client) => {
      const { rowCount } = await client.query(`
        DELETE FROM auth_sessions WHERE family_id IN (
          SELECT family_id FROM auth_sessions GROUP BY family_id
          HAVING bool_or(revoked_at IS NOT NULL) OR max(absolute_expires_at) <= now() OR max(idle_expires_at) <= now()
          LIMIT $1)`, [batchSize])
      return rowCount ?? 0
    })
    deleted += count
    if (count === 0) break
  }
  return { deleted }
}
