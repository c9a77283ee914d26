import { randomBytes, randomUUID } from 'node:crypto'
import type pg from 'pg'
import { AppError } from '../errors.js'
import type { AuditSink } from './audit-sink.js'
import { isUuid, type Database, type Queryable } from './database.js'
import type { Logger } from './logger.js'
import type { PasswordHasher } from './passwords.js'
import { RefreshReuseDetected, setUserContext, type AuthContext, type ClientMeta, type IssuedTokens, type Role, type SessionService } from './sessions.js'

export interface TenantSummary { id: string, name: string, slug: string, role: Role }

/** The session envelope of API.md. */
export interface SessionEnvelope {
  accessToken: string
  refreshToken: string
  expiresIn: number
  user: { id: string, email: string }
  tenant: TenantSummary | null
  session: { id: string }
}

interface UserRow {
  id: string
  email: string
  password_hash: string
  is_operator: boolean
  disabled_at: Date | null
  locked_for_s: number | null
}

export interface AccountDeps {
  db: Database
  hasher: PasswordHasher
  sessions: SessionService
  audit: AuditSink
  log: Logger
  maxFailuresPerHour: number
}

const invalidCredentials = () => new AppError('AUTH_INVALID_CREDENTIALS', 'email or password is incorrect')
const UNIQUE_VIOLATION = '23505'

export const normaliseEmail = (email: string) => email.trim().toLowerCase()

/** A URL-safe slug from a display name ("Acme Corp!" → "acme-corp"). */
export function slugify (name: string): string {
  const base = name.normalize('NFKD').toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 40).replace(/-+$/, '')
  return base || 'tenant'
}

function envelope (tokens: IssuedTokens, user: { id: string, email: string }, tenant: TenantSummary | null): SessionEnvelope {
  return {
    accessToken: tokens.accessToken,
    refreshToken: tokens.refreshToken,
    expiresIn: tokens.expiresIn,
    user,
    tenant,
    session: { id: tokens.familyId }
  }
}

async function tenantSummary (client: Queryable, tenantId: string, userId: string): Promise<TenantSummary | null> {
  const { rows: [t] } = await client.query<TenantSummary>(
    'SELECT t.id, t.name, t.slug, m.role FROM tenants t JOIN memberships m ON m.tenant_id = t.id AND m.user_id = $2 WHERE t.id = $1',
    [tenantId, userId])
  return t ?? null
}

/** The tenant a login acts in: the one asked for, the only one, none for an operator; or why not. */
function chooseTenant (tenants: TenantSummary[], wanted: string | undefined, isOperator: boolean): TenantSummary | null | AppError {
  if (wanted !== undefined) {
    const key = wanted.toLowerCase()
    return tenants.find(t => t.id === key || t.slug === key) ?? new AppError('TENANT_FORBIDDEN', 'this account is not a member of that tenant')
  }
  if (isOperator) return null
  if (tenants.length === 1) return tenants[0]!
  if (tenants.length === 0) return new AppError('TENANT_FORBIDDEN', 'this account belongs to no tenant')
  return new AppError('TENANT_REQUIRED', `this account belongs to ${tenants.length} tenants: pass "tenant" (id or slug)`)
}

/** Sign-up, login, refresh, logout and password changes. No Fastify in here. */
export function createAccountService ({ db, hasher, sessions, audit, log, maxFailuresPerHour }: AccountDeps) {
  const actor = (user: { id: string, email: string }) => ({ type: 'user' as const, id: user.id, email: user.email })

  async function findUser (client: Queryable, email: string): Promise<UserRow | undefined> {
    const { rows: [user] } = await client.query<UserRow>(
      `SELECT id, email, password_hash, is_operator, disabled_at,
              CASE WHEN failed_logins >= $2 AND failed_window_start > now() - interval '1 hour'
                   THEN ceil(extract(epoch FROM failed_window_start + interval '1 hour' - now()))::int END AS locked_for_s
         FROM users WHERE lower(email) = $1`, [normaliseEmail(email), maxFailuresPerHour])
    return user
  }

  /**
   * Takes one attempt from the account's hourly budget before its password is checked, in one
   * atomic UPDATE (a fixed one-hour window, in Postgres so every replica shares it): concurrent
   * guesses cannot all pass a check made before any of them was counted. A right password gives
   * it back. No row: the account is locked (locked_for_s) or does not exist.
   */
  async function claimAttempt (email: string): Promise<UserRow | undefined> {
    const { rows: [user] } = await db.query<UserRow>(
      `UPDATE users SET
         failed_logins = CASE WHEN failed_window_start > now() - interval '1 hour' THEN failed_logins + 1 ELSE 1 END,
         failed_window_start = CASE WHEN failed_window_start > now() - interval '1 hour' THEN failed_window_start ELSE now() END
       WHERE lower(email) = $1
         AND NOT (failed_logins >= $2 AND coalesce(failed_window_start > now() - interval '1 hour', false))
       RETURNING id, email, password_hash, is_operator, disabled_at, NULL::int AS locked_for_s`, [normaliseEmail(email), maxFailuresPerHour])
    return user ?? findUser(db.pool, email)
  }

  return {
    async signup (input: { email: string, password: string, tenantName: string }, meta: ClientMeta): Promise<SessionEnvelope> {
      const email = normaliseEmail(input.email)
      const passwordHash = await hasher.hash(input.password)
      return db.withTransaction(async (client) => {
        const userId = randomUUID()
        const tenantId = randomUUID()
        try {
          await client.query('INSERT INTO users (id, email, password_hash) VALUES ($1, $2, $3)', [userId, email, passwordHash])
        } catch (err) {
          if ((err as { code?: string }).code === UNIQUE_VIOLATION) throw new AppError('CONFLICT', 'an account with this email already exists')
          throw err
        }
        await setUserContext(client, userId, tenantId)
        const name = input.tenantName.trim()
        let slug = slugify(name)
        // Slugs are unique across tenants; on a clash add a short random suffix and try again.
        for (let attempt = 0; ; attempt++) {
          const { rowCount } = await client.query(
            'INSERT INTO tenants (id, name, slug) VALUES ($1, $2, $3) ON CONFLICT (slug) DO NOTHING', [tenantId, name, slug])
          if (rowCount) break
          if (attempt >= 5) throw new AppError('CONFLICT', 'could not find a free slug for this tenant name')
          slug = `${slugify(name).slice(0, 35)}-${randomBytes(3).toString('hex')}`
        }
        await client.query("INSERT INTO memberships (tenant_id, user_id, role) VALUES ($1, $2, 'owner')", [tenantId, userId])
        const tokens = await sessions.start(client, userId, tenantId, meta)
        const user = { id: userId, email }
        await audit(client, 'tenant_operation_log', tenantId, { actor: actor(user), action: 'tenant.created', target: { type: 'tenant', id: tenantId }, data: { name, slug, plan: 'free', lifecycle: 'trial' } })
        await audit(client, 'audit_log', tenantId, { actor: actor(user), action: 'auth.signup', target: { type: 'user', id: userId }, data: { sessionId: tokens.familyId } })
        return envelope(tokens, user, { id: tenantId, name, slug, role: 'owner' })
      })
    },

    async login (input: { email: string, password: string, tenant?: string }, meta: ClientMeta): Promise<SessionEnvelope> {
      const user = await claimAttempt(input.email)
      if (user?.locked_for_s) {
        throw new AppError('RATE_LIMITED', 'too many failed logins for this account; try again later', { headers: { 'retry-after': String(user.locked_for_s) } })
      }
      // Unknown accounts cost one argon2 verification too (a dummy hash), and get the same 401.
      // A failure is already counted (claimAttempt).
      const ok = await hasher.verify(user?.password_hash ?? null, input.password)
      if (!user || !ok || user.disabled_at) throw invalidCredentials()

      const rehash = hasher.needsRehash(user.password_hash) ? await hasher.hash(input.password) : null
      const chosen = await db.withTransaction(async (client) => {
        await setUserContext(client, user.id)
        // The right password gives the attempt back, and that commits even when the tenant
        // choice below is refused (a forgotten `tenant` is no failed login).
        await client.query('UPDATE users SET failed_logins = 0, failed_window_start = NULL, password_hash = coalesce($2, password_hash) WHERE id = $1',
          [user.id, rehash])
        const { rows: tenants } = await client.query<TenantSummary>(
          `SELECT t.id, t.name, t.slug, m.role FROM memberships m JOIN tenants t ON t.id = m.tenant_id
            WHERE m.user_id = $1 ORDER BY m.created_at`, [user.id])
        const tenant = chooseTenant(tenants, input.tenant, user.is_operator)
        if (tenant instanceof AppError) return { refused: tenant }
        if (tenant) await setUserContext(client, user.id, tenant.id)
        const tokens = await sessions.start(client, user.id, tenant?.id ?? null, meta)
        const who = { id: user.id, email: user.email }
        if (tenant) {
          await audit(client, 'audit_log', tenant.id, { actor: actor(who), action: 'auth.login', target: { type: 'session', id: tokens.familyId }, data: { ip: meta.ip ?? null } })
        } else {
          await client.query("SELECT set_config('app.operator', 'on', true)")
          await audit(client, 'operator_audit_events', null, { actor: { type: 'operator', id: user.id, email: user.email }, action: 'operator.login', target: { type: 'session', id: tokens.familyId }, data: { ip: meta.ip ?? null } })
        }
        if (rehash) log.info({ userId: user.id }, 'password rehashed with the current parameters')
        return { envelope: envelope(tokens, who, tenant) }
      })
      if ('refused' in chosen) throw chosen.refused
      return chosen.envelope
    },

    async refresh (refreshToken: string, meta: ClientMeta): Promise<SessionEnvelope> {
      let reuse: RefreshReuseDetected | undefined
      const result = await db.withTransaction(async (client: pg.PoolClient) => {
        try {
          const { tokens, userId, tenantId } = await sessions.refresh(client, refreshToken, meta)
          const { rows: [user] } = await client.query<{ id: string, email: string }>('SELECT id, email FROM users WHERE id = $1', [userId])
          const tenant = tenantId ? await tenantSummary(client, tenantId, userId) : null
          return envelope(tokens, user!, tenant)
        } catch (err) {
          if (!(err instanceof RefreshReuseDetected)) throw err
          // The revocation must commit even though the request fails: record it and return.
          reuse = err
          if (err.tenantId) {
            await setUserContext(client, err.userId, err.tenantId)
            await audit(client, 'audit_log', err.tenantId, { actor: { type: 'system', id: null }, action: 'auth.refresh_reuse_detected', target: { type: 'session', id: err.familyId }, data: { userId: err.userId } })
          }
          return null
        }
      })
      if (reuse || !result) {
        log.warn({ familyId: reuse?.familyId, userId: reuse?.userId }, 'refresh token reuse detected: session family revoked')
        throw new AppError('AUTH_INVALID_TOKEN', 'the token is invalid, expired or revoked')
      }
      return result
    },

    async logout (auth: AuthContext): Promise<void> {
      await db.withTransaction(async (client) => {
        await setUserContext(client, auth.userId, auth.tenantId)
        await sessions.revokeFamily(client, auth.userId, auth.familyId, 'logout')
        if (auth.tenantId) await audit(client, 'audit_log', auth.tenantId, { actor: actor({ id: auth.userId, email: auth.email }), action: 'auth.logout', target: { type: 'session', id: auth.familyId } })
      })
    },

    async listSessions (auth: AuthContext) {
      return db.withTransaction(async (client) => {
        await setUserContext(client, auth.userId)
        const list = await sessions.list(client, auth.userId)
        return list.map(s => ({ ...s, current: s.id === auth.familyId }))
      })
    },

    async revokeSession (auth: AuthContext, familyId: string): Promise<void> {
      if (!isUuid(familyId)) throw new AppError('NOT_FOUND', 'session not found')
      await db.withTransaction(async (client) => {
        await setUserContext(client, auth.userId, auth.tenantId)
        const revoked = await sessions.revokeFamily(client, auth.userId, familyId, 'revoked_by_user')
        if (!revoked) throw new AppError('NOT_FOUND', 'session not found')
        if (auth.tenantId) await audit(client, 'audit_log', auth.tenantId, { actor: actor({ id: auth.userId, email: auth.email }), action: 'auth.session_revoked', target: { type: 'session', id: familyId } })
      })
    },

    async changePassword (auth: AuthContext, currentPassword: string, newPassword: string): Promise<void> {
      const { rows: [row] } = await db.query<{ password_hash: string }>('SELECT password_hash FROM users WHERE id = $1', [auth.userId])
      if (!row || !await hasher.verify(row.password_hash, currentPassword)) throw invalidCredentials()
      const hash = await hasher.hash(newPassword)
      await db.withTransaction(async (client) => {
        await setUserContext(client, auth.userId, auth.tenantId)
        await client.query('UPDATE users SET password_hash = $2, password_changed_at = now() WHERE id = $1', [auth.userId, hash])
        const revoked = await sessions.revokeAllForUser(client, auth.userId, 'password_changed', auth.familyId)
        if (auth.tenantId) await audit(client, 'audit_log', auth.tenantId, { actor: actor({ id: auth.userId, email: auth.email }), action: 'auth.password_changed', target: { type: 'user', id: auth.userId }, data: { sessionsRevoked: revoked.length } })
      })
    },

    /** Creates an operator if no user has this email (boot bootstrap and `npm run operator:create`). */
    async ensureOperator (email: string, password: string): Promise<'created' | 'exists'> {
      const existing = await findUser(db.pool, email)
      if (existing) return 'exists'
      const hash = await hasher.hash(password)
      const { rowCount } = await db.query(
        'INSERT INTO users (email, password_hash, is_operator) VALUES ($1, $2, true) ON CONFLICT ((lower(email))) DO NOTHING', [normaliseEmail(email), hash])
      return rowCount ? 'created' : 'exists'
    }
  }
}

export type AccountService = ReturnType<typeof createAccountService>
