import { AppError, notFound } from '../errors.js'
import type { AuditSink } from './audit-sink.js'
import { isUuid, type Database, type Queryable } from './database.js'
import {
  BROADCAST_CHANNEL, effectiveLifecycle, loadTenantState, TRANSITIONS,
  type ChangeType, type EntitlementEngine, type Lifecycle
} from './entitlements.js'
import type { AuthContext } from './sessions.js'

export interface TenantRow { id: string, name: string, slug: string, plan: string, lifecycle: Lifecycle }
export interface Contract { tenantId: string, features: Record<string, unknown>, startsAt: Date, endsAt: Date }

const TENANT_COLUMNS = 'id, name, slug, plan, lifecycle'

/**
 * What operators change about tenants: plan, contract, lifecycle. Each change is one
 * transaction that also writes tenant_operation_log and operator_audit_events and sends the
 * cross-replica NOTIFY (delivered only if it commits); the local event follows the commit.
 */
export function createTenantAdmin ({ db, audit, engine, originToken, graceMs }: {
  db: Database
  audit: AuditSink
  engine: EntitlementEngine
  originToken: string
  graceMs: number
}) {
  async function change<T> (operator: AuthContext, tenantId: string, type: ChangeType,
    fn: (client: Queryable, before: TenantRow) => Promise<{ result: T, action: string, data: Record<string, unknown> }>): Promise<T> {
    if (!isUuid(tenantId)) throw notFound('tenant')
    const result = await db.withTransaction(async (client) => {
      // Operator scope for the operator chain, tenant scope for the tenant's own chain.
      await client.query("SELECT set_config('app.operator', 'on', true), set_config('app.tenant_id', $1, true)", [tenantId])
      const { rows: [before] } = await client.query<TenantRow>(`SELECT ${TENANT_COLUMNS} FROM tenants WHERE id = $1 FOR UPDATE`, [tenantId])
      if (!before) throw notFound('tenant')
      const { result, action, data } = await fn(client, before)
      const actor = { type: 'operator' as const, id: operator.userId, email: operator.email }
      await audit(client, 'tenant_operation_log', tenantId, { actor, action, target: { type: 'tenant', id: tenantId }, data })
      await audit(client, 'operator_audit_events', null, { actor, action, target: { type: 'tenant', id: tenantId }, data })
      await client.query('SELECT pg_notify($1, $2)', [BROADCAST_CHANNEL, JSON.stringify({ type, tenantId, originToken })])
      return result
    })
    engine.emitChange(type, tenantId)
    return result
  }

  return {
    /** Every tenant, by id, keyset-paginated. */
    async list (cursor: string | undefined, limit: number) {
      if (cursor !== undefined && !isUuid(cursor)) throw new AppError('VALIDATION_FAILED', 'cursor is not valid')
      const { rows } = await db.withTransaction(async (client) => {
        await client.query("SELECT set_config('app.operator', 'on', true)")
        return client.query<TenantRow>(
          `SELECT ${TENANT_COLUMNS} FROM tenants WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2`, [cursor ?? null, limit + 1])
      })
      const page = rows.slice(0, limit)
      return { tenants: page, nextCursor: rows.length > limit ? page[page.length - 1]!.id : null }
    },

    setPlan (operator: AuthContext, tenantId: string, plan: string) {
      return change(operator, tenantId, 'entitlement.changed', async (client, before) => {
        const { rows: [after] } = await client.query<TenantRow>(`UPDATE tenants SET plan = $2 WHERE id = $1 RETURNING ${TENANT_COLUMNS}`, [tenantId, plan])
        return { result: after!, action: 'tenant.plan_changed', data: { before: { plan: before.plan }, after: { plan } } }
      })
    },

    putContract (operator: AuthContext, tenantId: string, input: { features: Record<string, unknown>, startsAt: string, endsAt: string }) {
      if (!(Date.parse(input.endsAt) > Date.parse(input.startsAt))) throw new AppError('VALIDATION_FAILED', 'endsAt must be after startsAt')
      return change(operator, tenantId, 'contract.changed', async (client) => {
        const { rows: [previous] } = await client.query('SELECT features, starts_at, ends_at FROM tenant_contracts WHERE tenant_id = $1', [tenantId])
        const { rows: [contract] } = await client.query<Contract>(
          `INSERT INTO tenant_contracts (tenant_id, features, starts_at, ends_at) VALUES ($1, $2, $3, $4)
           ON CONFLICT (tenant_id) DO UPDATE SET features = excluded.features, starts_at = excluded.starts_at, ends_at = excluded.ends_at, updated_at = now()
           RETURNING tenant_id AS "tenantId", features, starts_at AS "startsAt", ends_at AS "endsAt"`,
          [tenantId, JSON.stringify(input.features), input.startsAt, input.endsAt])
        return { result: contract!, action: 'tenant.contract_set', data: { before: previous ?? null, after: input } }
      })
    },

    deleteContract (operator: AuthContext, tenantId: string) {
      return change(operator, tenantId, 'contract.changed', async (client) => {
        const { rows: [previous] } = await client.query('DELETE FROM tenant_contracts WHERE tenant_id = $1 RETURNING features, starts_at, ends_at', [tenantId])
        if (!previous) throw notFound('contract')
        return { result: undefined, action: 'tenant.contract_removed', data: { before: previous, after: null } }
      })
    },

    transition (operator: AuthContext, tenantId: string, to: Lifecycle) {
      return change(operator, tenantId, 'lifecycle.changed', async (client) => {
        // The transition starts from where the tenant is now, dates included (a trial that
        // has ended is past due even if no job has written it yet).
        const state = await loadTenantState(client, tenantId)
        const from = effectiveLifecycle(state!, Date.now(), graceMs).lifecycle
        if (!TRANSITIONS[from].includes(to)) {
          throw new AppError('CONFLICT', `a ${from} tenant cannot become ${to}; allowed: ${TRANSITIONS[from].join(', ') || 'none'}`)
        }
        const { rows: [after] } = await client.query<TenantRow>(
          `UPDATE tenants SET lifecycle = $2, lifecycle_changed_at = now(),
                  grace_ends_at = CASE WHEN $2 = 'past_due' THEN now() + make_interval(secs => $3) ELSE NULL END
            WHERE id = $1 RETURNING ${TENANT_COLUMNS}`, [tenantId, to, graceMs / 1000])
        return { result: after!, action: 'tenant.lifecycle_changed', data: { before: { lifecycle: from }, after: { lifecycle: to } } }
      })
    }
  }
}

export type TenantAdmin = ReturnType<typeof createTenantAdmin>
