import { createCheckpoints } from '../services/audit-checkpoints.js'
import type { AuditSigner } from '../infra/audit-signer.js'
import type { Database } from '../infra/database.js'
import type { Logger } from '../infra/logger.js'
import { eachTenant } from '../infra/each-tenant.js'
import type { JobDefinition } from './index.js'

/**
 * The audit-checkpoint job: signs and stores the heads of every tenant's chains and of the
 * operator chain (docs/audit.md), each scope in its own transaction. A head an earlier run
 * already signed is not stored again, so a quiet tenant costs two index reads.
 */
export async function checkpointAuditChains ({ db, signer, log }: { db: Database, signer: AuditSigner, log: Logger }, signal: AbortSignal) {
  let signed = 0
  const count = (checkpoints: unknown[]) => { signed += checkpoints.length }
  const tenants = await eachTenant(db, log, signal, async (tenantId) => {
    count(await db.withTenant(tenantId, c => createCheckpoints(c, signer, tenantId)))
  })
  if (!signal.aborted) count(await db.withOperator(c => createCheckpoints(c, signer, null)))
  return { tenants, checkpoints: signed, aborted: signal.aborted }
}

/** Only where there is a key to sign with (none in production without AUDIT_SIGNING_KEY). */
export const auditCheckpointJob: JobDefinition = {
  name: 'audit-checkpoint',
  interval: 'JOB_AUDIT_CHECKPOINT_INTERVAL_S',
  enabled: ({ services }) => services.auditSigner !== null,
  run: ({ db, log, services }, signal) => checkpointAuditChains({ db, signer: services.auditSigner!, log }, signal)
}
