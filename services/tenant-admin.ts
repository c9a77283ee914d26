import { AppError, notFound } from '../errors.js'
import type { AuditEntry, AuditSink } from './audit-sink.js'
import { isUuid, type Database, type Queryable } from '../infra/database.js'
import {
  BROADCAST_CHANNEL, effectiveLifecycle, loadTenantState, TRANSITIONS,
  type ChangeType, type EntitlementEngine, type Lifecycle
} from './entitlements.js'
import type { Logger } from '../infra/logger.js'
import type { AuthContext } from './sessions.js'

export interface TenantRow { id: string, name: string, slug: string, plan: string, lifecycle: Lifecycle }
export interface Contract { tenantId: string, features: Record<string, unknown>, startsAt: Date, endsAt: Date }

const TENANT_COLUMNS = 'id, name, slug, plan, lifecycle'

const invalid = (field: string, message: string) =>
  new AppError('VALIDATION_FAILED', `${field} ${message}`, { errors: [{ field, message }] })

// The schema's date-time also takes years 0000–1969 and offsets up to ±23:59; Postgres refuses
// year 0 and offsets beyond ±15:59 (a 500). A contract's dates are instants: sent to Postgres
// in UTC, in range.
const LATEST = Date.UTC(9999, 11, 31, 23, 59, 59, 999)
function contractTime (value: string, name: string): string {
  const at = Date.parse(value)
  if (!(at >= 0 && at <= LATEST)) throw invalid(`body.${name}`, 'must be a time between 1970 and 9999')
  return new Date(at).toISOString()
}

/**
 * What operators change about tenants: plan, contract, lifecycle. Each change is one
 * transaction that also writes tenant_operation_log and operator_audit_events and sends the
 * cross-replica NOTIFY (delivered only if it commits); the local event follows the commit.
 */
export function createTenantAdmin ({ db, audit, engine, originToken, graceMs, log }: {
  db: Database
  log: Logger
  audit: AuditSink
  engine: EntitlementEngine
  originToken: string
  graceMs: number
}) {
  const operatorActor = (operator: AuthContext): AuditEntry['actor'] => ({ type: 'operator', id: operator.userId, email: operator.email })
  const SYSTEM: AuditEntry['actor'] = { type: 'system', id: null }

  async function change<T> (actor: AuditEntry['actor'], tenantId: string, type: ChangeType,
    fn: (client: Queryable, before: TenantRow) => Promise<{ result: T, action: string, data: Record<string, unknown> }>): Promise<T> {
    if (!isUuid(tenantId)) throw notFound('tenant')
    const result = await db.withTransaction(async (client) => {
      // Operator scope for the operator chain, tenant scope for the tenant's own chain.
      await db.setContext(client, { tenantId, operator: true })
      const { rows: [before] } = await client.query<TenantRow>(`SELECT ${TENANT_COLUMNS} FROM tenants WHERE id = $1 FOR UPDATE`, [tenantId])
      if (!before) throw notFound('tenant')
      const { result, action, data } = await fn(client, before)
      await audit(client, 'tenant_operation_log', tenantId, { actor, action, target: { type: 'tenant', id: tenantId }, data })
      await audit(client, 'operator_audit_events', null, { actor, action, target: { type: 'tenant', id: tenantId }, data })
      await client.query('SELECT pg_notify($1, $2)', [BROADCAST_CHANNEL, JSON.stringify({ type, tenantId, originToken })])
      return result
    })
    engine.emitChange(type, tenantId)
    return result
  }

  /**
   * An operator's transition starts from where the tenant is now, dates included (a trial
   * that has ended is past due even if no job has written it yet). A `due` transition is the
   * job writing down what a date already put in force, so it starts from the stored state.
   */
  function transition (actor: AuditEntry['actor'], tenantId: string, to: Lifecycle, due = false) {
    return change(actor, tenantId, 'lifecycle.changed', async (client, before) => {
      const state = await loadTenantState(client, tenantId)
      const from = due ? before.lifecycle : effectiveLifecycle(state!, Date.now(), graceMs).lifecycle
      if (!TRANSITIONS[from].includes(to)) {
        throw new AppError('CONFLICT', `a ${from} tenant cannot become ${to}; allowed: ${TRANSITIONS[from].join(', ') || 'none'}`)
      }
      // Past due starts its grace now, or, when a job records a trial that ended, at the trial's end.
      const { rows: [after] } = await client.query<TenantRow>(
        `UPDATE tenants SET lifecycle = $2, lifecycle_changed_at = now(),
                grace_ends_at = CASE WHEN $2 = 'past_due'
                  THEN (CASE WHEN $4 THEN trial_ends_at ELSE now() END) + make_interval(secs => $3) ELSE NULL END
          WHERE id = $1 RETURNING ${TENANT_COLUMNS}`, [tenantId, to, graceMs / 1000, due && from === 'trial'])
      return { result: after!, action: 'tenant.lifecycle_changed', data: { before: { lifecycle: from }, after: { lifecycle: to } } }
    })
  }

  return {
    /** Every tenant, by id, keyset-paginated. */
    async list (cursor: string | undefined, limit: number) {
      if (cursor !== undefined && !isUuid(cursor)) throw invalid('querystring.cursor', 'is not a cursor this service issued')
      const { rows } = await db.withOperator(async (client) => {
        return client.query<TenantRow>(
          `SELECT ${TENANT_COLUMNS} FROM tenants WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2`, [cursor ?? null, limit + 1])
      })
      const page = rows.slice(0, limit)
      return { tenants: page, nextCursor: rows.length > limit ? page[page.length - 1]!.id : null }
    },

    setPlan (operator: AuthContext, tenantId: string, plan: string) {
      return change(operatorActor(operator), tenantId, 'entitlement.changed', async (client, before) => {
        const { rows: [after] } = await client.query<TenantRow>(
          `UPDATE tenants SET plan = $2 WHERE id = $1 RETURNING ${TENANT_COLUMNS}`, [tenantId, plan])
        return { result: after!, action: 'tenant.plan_changed', data: { before: { plan: before.plan }, after: { plan } } }
      })
    },

    putContract (operator: AuthContext, tenantId: string, input: { features: Record<string, unknown>, startsAt: string, endsAt: string }) {
      const startsAt = contractTime(input.startsAt, 'startsAt')
      const endsAt = contractTime(input.endsAt, 'endsAt')
      if (!(Date.parse(endsAt) > Date.parse(startsAt))) throw invalid('body.endsAt', 'must be after startsAt')
      return change(operatorActor(operator), tenantId, 'contract.changed', async (client) => {
        const { rows: [previous] } = await client.query(
          'SELECT features, starts_at, ends_at FROM tenant_contracts WHERE tenant_id = $1', [tenantId])
        const { rows: [contract] } = await client.query<Contract>(
          `INSERT INTO tenant_contracts (tenant_id, features, starts_at, ends_at) VALUES ($1, $2, $3, $4)
           ON CONFLICT (tenant_id) DO UPDATE
             SET features = excluded.features, starts_at = excluded.starts_at, ends_at = excluded.ends_at, updated_at = now()
           RETURNING tenant_id AS "tenantId", features, starts_at AS "startsAt", ends_at AS "endsAt"`,
          [tenantId, JSON.stringify(input.features), startsAt, endsAt])
        return { result: contract!, action: 'tenant.contract_set', data: { before: previous ?? null, after: input } }
      })
    },

    deleteContract (operator: AuthContext, tenantId: string) {
      return change(operatorActor(operator), tenantId, 'contract.changed', async (client) => {
        const { rows: [previous] } = await client.query(
          'DELETE FROM tenant_contracts WHERE tenant_id = $1 RETURNING features, starts_at, ends_at', [tenantId])
        if (!previous) throw notFound('contract')
        return { result: undefined, action: 'tenant.contract_removed', data: { before: previous, after: null } }
      })
    },

    transition (operator: AuthContext, tenantId: string, to: Lifecycle) {
      return transition(operatorActor(operator), tenantId, to)
    },

    /**
     * The scheduler's job: writes the transitions that dates have already put in force
     * (trial end → past due, grace end → suspended, contract end → removed), each with its
     * operation-log row and change event, like an operator's. Stops between tenants on abort.
     */
    async applyDueTransitions (signal: AbortSignal) {
      const due = await db.withOperator(async (client) => {
        const { rows } = await client.query<{ id: string, kind: 'trial' | 'grace' | 'contract' }>(`
          SELECT id, 'trial' AS kind FROM tenants WHERE lifecycle = 'trial' AND trial_ends_at <= now()
          UNION ALL SELECT id, 'grace' FROM tenants WHERE lifecycle = 'past_due' AND grace_ends_at <= now()
          UNION ALL SELECT tenant_id, 'contract' FROM tenant_contracts WHERE ends_at <= now()
          ORDER BY 1`)
        return rows
      })
      const done = { trialsEnded: 0, gracesEnded: 0, contractsEnded: 0, failed: 0 }
      for (const { id, kind } of due) {
        if (signal.aborted) break
        try {
          if (kind === 'trial') {
            await transition(SYSTEM, id, 'past_due', true)
            done.trialsEnded++
          } else if (kind === 'grace') {
            await transition(SYSTEM, id, 'suspended', true)
            done.gracesEnded++
          } else {
            await change(SYSTEM, id, 'contract.changed', async (client) => {
              const { rows: [ended] } = await client.query(
                'DELETE FROM tenant_contracts WHERE tenant_id = $1 AND ends_at <= now() RETURNING features, starts_at, ends_at', [id])
              return { result: undefined, action: 'tenant.contract_ended', data: { before: ended ?? null, after: null } }
            })
            done.contractsEnded++
          }
        } catch (err) {
          // One tenant's failure (a concurrent operator change, say) must not stop the others.
          done.failed++
          log.warn({ err, tenantId: id, kind }, 'due lifecycle transition failed; retried next tick')
        }
      }
      return done
    }
  }
}

export type TenantAdmin = ReturnType<typeof createTenantAdmin>
