import type { Queryable } from '../infra/database.js'

export type AuditChain = 'audit_log' | 'tenant_operation_log' | 'operator_audit_events'

export interface AuditEntry {
  actor: { type: 'user' | 'operator' | 'system', id: string | null, email?: string }
  action: string
  target?: { type: string, id: string } | null
  data?: Record<string, unknown>
}

/**
 * Writes one audit row inside the caller's transaction, so the row commits or rolls back
 * with the change it records. Services take it as a dependency (services/audit.ts provides it).
 */
export type AuditSink = (client: Queryable, chain: AuditChain, tenantId: string | null, entry: AuditEntry) => Promise<unknown>

export const noAudit: AuditSink = async () => undefined
