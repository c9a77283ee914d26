import type pg from 'pg'
import { AppError, notFound } from '../errors.js'
import type { AuditSink } from './audit-sink.js'
import { isUuid, type Database, type Queryable, type TenantRun } from '../infra/database.js'
import { normaliseEmail } from './accounts.js'
import type { Decision } from './entitlements.js'
import type { AuthContext, Role } from './sessions.js'

export interface Tenant { id: string, name: string, slug: string, plan: string, lifecycle: string, createdAt: Date }
export interface Member { userId: string, email: string, role: Role }

const MANAGERS: ReadonlySet<Role | null> = new Set(['owner', 'admin'])

/**
 * The reads of the caller's own tenant, as constant statements: the tenant is the transaction's
 * (its verified context, set by withTenant or by the auth lookup), so each can also travel with
 * the auth lookup in one round trip (a route's `tenantRead`, plugins/auth.ts). Each calls an
 * owner-side function that verifies the context once (db/migrations/0013_tenant_reads.sql):
 * as plain statements under the policies they cost a third more Postgres CPU.
 */
export const TENANT_READS = {
  tenant: 'SELECT id, name, slug, plan, lifecycle, created_at AS "createdAt" FROM tenant_read_tenant()',
  members: 'SELECT user_id AS "userId", email, role FROM tenant_read_members() ORDER BY created_at, email'
} as const

/** The current tenant and its members; every query runs under the tenant's row-level security. */
export interface TenantServiceDeps {
  db: Database
  audit: AuditSink
  entitlements: { check(tenantId: string, feature: 'seats'): Promise<Decision> }
}

export function createTenantService ({ db, audit, entitlements }: TenantServiceDeps) {
  const actor = (auth: AuthContext) => ({ type: 'user' as const, id: auth.userId, email: auth.email })

  function requireManager (auth: AuthContext, changingOwner: boolean) {
    if (!MANAGERS.has(auth.role)) throw new AppError('TENANT_FORBIDDEN', 'only owners and admins manage members')
    if (changingOwner && auth.role !== 'owner') throw new AppError('TENANT_FORBIDDEN', 'only owners grant or take the owner role')
  }

  async function memberOf (client: Queryable, tenantId: string, userId: string) {
    if (!isUuid(userId)) throw notFound('member')
    const { rows: [m] } = await client.query<Member>(
      'SELECT m.user_id AS "userId", u.email, m.role FROM memberships m JOIN users u ON u.id = m.user_id ' +
        'WHERE m.tenant_id = $1 AND m.user_id = $2 FOR UPDATE OF m',
      [tenantId, userId])
    if (!m) throw notFound('member')
    return m
  }

  async function lockOwners (client: Queryable, tenantId: string) {
    // Taken first, in one order, by every role change and removal: two of them on one tenant
    // queue here instead of deadlocking on each other's rows (two owners removing each other),
    // and neither passes the last-owner check on a count the other is about to change.
    const { rows } = await client.query(
      "SELECT user_id FROM memberships WHERE tenant_id = $1 AND role = 'owner' ORDER BY user_id FOR UPDATE", [tenantId])
    return rows.length
  }

  // Reads take the caller's TenantRun (a request's, which may join the transaction its auth
  // lookup opened); by default, a transaction of their own in `tenantId`. Their statements
  // take the tenant from that transaction (TENANT_READS), so a run must set it: an operator's
  // would find nothing.
  const own = (tenantId: string): TenantRun => fn => db.withTenant(tenantId, fn)

  return {
    // `done`: the statement's result when it was read already, with the auth lookup.
    async get (tenantId: string, run = own(tenantId), done: pg.QueryResult | null = null): Promise<Tenant> {
      const { rows: [t] } = done ?? await run(c => c.query(TENANT_READS.tenant))
      if (!t) throw notFound('tenant')
      return t as Tenant
    },

    async members (tenantId: string, run = own(tenantId), done: pg.QueryResult | null = null): Promise<Member[]> {
      const { rows } = done ?? await run(c => c.query(TENANT_READS.members))
      return rows as Member[]
    },

    async addMember (auth: AuthContext, email: string, role: Role): Promise<Member> {
      const tenantId = auth.tenantId!
      requireManager(auth, role === 'owner')
      const seats = await entitlements.check(tenantId, 'seats')
      if (!seats.allowed) throw new AppError('ENTITLEMENT_DENIED', `seats: ${seats.reason}`)
      return db.withTenant(tenantId, async (client) => {
        // The owners' lock (below) serialises concurrent adds, so two of them cannot both
        // take the last seat.
        await lockOwners(client, tenantId)
        if (seats.limit !== null) {
          const { rows: [row] } = await client.query<{ n: number }>(
            'SELECT count(*)::int AS n FROM memberships WHERE tenant_id = $1', [tenantId])
          if (row!.n >= seats.limit) throw new AppError('ENTITLEMENT_DENIED', `seats: all ${seats.limit} seats of the plan are taken`)
        }
        // Not a member yet, so not visible to this tenant: one exact email, through the owner's function.
        const { rows: [user] } = await client.query<{ id: string, email: string }>(
          'SELECT id, email FROM auth_user_by_email($1)', [normaliseEmail(email)])
        if (!user) throw notFound('user')
        const { rowCount } = await client.query(
          'INSERT INTO memberships (tenant_id, user_id, role) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING', [tenantId, user.id, role])
        if (!rowCount) throw new AppError('CONFLICT', 'this user is already a member')
        await audit(client, 'audit_log', tenantId, {
          actor: actor(auth), action: 'member.added', target: { type: 'user', id: user.id }, data: { email: user.email, role }
        })
        return { userId: user.id, email: user.email, role }
      })
    },

    async changeRole (auth: AuthContext, userId: string, role: Role): Promise<Member> {
      const tenantId = auth.tenantId!
      return db.withTenant(tenantId, async (client) => {
        const owners = await lockOwners(client, tenantId)
        const member = await memberOf(client, tenantId, userId)
        requireManager(auth, role === 'owner' || member.role === 'owner')
        if (member.role === 'owner' && role !== 'owner' && owners <= 1) {
          throw new AppError('CONFLICT', 'the last owner cannot be demoted; make someone else owner first')
        }
        await client.query('UPDATE memberships SET role = $3 WHERE tenant_id = $1 AND user_id = $2', [tenantId, userId, role])
        await audit(client, 'audit_log', tenantId, {
          actor: actor(auth), action: 'member.role_changed', target: { type: 'user', id: userId }, data: { from: member.role, to: role }
        })
        return { ...member, role }
      })
    },

    async removeMember (auth: AuthContext, userId: string): Promise<void> {
      const tenantId = auth.tenantId!
      await db.withTenant(tenantId, async (client) => {
        const owners = await lockOwners(client, tenantId)
        const member = await memberOf(client, tenantId, userId)
        // Anyone may leave; removing others takes an owner or admin (an owner for owners).
        if (userId !== auth.userId) requireManager(auth, member.role === 'owner')
        if (member.role === 'owner' && owners <= 1) {
          throw new AppError('CONFLICT', 'the last owner cannot be removed')
        }
        await client.query('DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2', [tenantId, userId])
        // Their sessions in this tenant end now, not at their next refresh.
        await client.query(
          "UPDATE auth_sessions SET revoked_at = now(), revoked_reason = 'membership_removed' " +
            'WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL',
          [tenantId, userId])
        await audit(client, 'audit_log', tenantId, {
          actor: actor(auth),
          action: 'member.removed',
          target: { type: 'user', id: userId },
          data: { email: member.email, role: member.role }
        })
      })
    }
  }
}

export type TenantService = ReturnType<typeof createTenantService>
