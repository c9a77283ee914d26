import type { Database } from '../infra/database.js'
import type { JobDefinition } from './index.js'

/**
 * Deletes dead session families in bounded batches: revoked ones, and those past their
 * absolute or idle expiry. A family goes whole: its spent rows are what detects a replayed
 * refresh token, so they stay while the family lives. Then clears the successor tokens
 * sealed for the refresh grace window in rows whose window is over.
 */
export async function purgeSessions (
  { db, reuseGraceS }: { db: Database, reuseGraceS: number }, signal: AbortSignal, { batchSize = 1000 } = {}
) {
  let deleted = 0
  let cleared = 0
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
  // Successor tokens sealed for the grace window are useless once it is over: clear them.
  while (!signal.aborted) {
    const count = await db.withOperator(async (client) => {
      const { rowCount } = await client.query(`
        UPDATE auth_sessions SET grace_payload = NULL WHERE id IN (
          SELECT id FROM auth_sessions WHERE grace_payload IS NOT NULL AND rotated_at < now() - make_interval(secs => $2)
          LIMIT $1)`, [batchSize, reuseGraceS])
      return rowCount ?? 0
    })
    cleared += count
    if (count < batchSize) break
  }
  return { deleted, cleared }
}

export const purgeSessionsJob: JobDefinition = {
  name: 'purge-sessions',
  interval: 'JOB_PURGE_SESSIONS_INTERVAL_S',
  run: ({ db, config }, signal) => purgeSessions({ db, reuseGraceS: config.REFRESH_REUSE_GRACE_S }, signal)
}
