import { randomBytes, randomUUID } from 'node:crypto'
import pg from 'pg'
import { AppError } from '../errors.js'
import type { AuditSink } from './audit-sink.js'
import { isUuid, type Database, type Queryable } from '../infra/database.js'
import type { Logger } from '../infra/logger.js'
import { clientKey, createLoginThrottle, type ThrottlePolicy } from './login-throttle.js'
import type { PasswordHasher } from '../infra/passwords.js'
import {
  decodeSessionCursor, RefreshReuseDetected, type AuthContext, type ClientMeta, type IssuedTokens, type Role, type SessionService
} from './sessions.js'

export interface TenantSummary { id: string, name: string, slug: string, role: Role }

/** The session envelope every sign-up, login and refresh answers (docs/auth.md). */
export interface SessionEnvelope {
  accessToken: string
  refreshToken: string
  expiresIn: number
  user: { id: string, email: string }
  tenant: TenantSummary | null
  session: { id: string }
}

export interface AccountDeps {
  db: Database
  hasher: PasswordHasher
  sessions: SessionService
  audit: AuditSink
  log: Logger
  throttle: ThrottlePolicy
  /** Live sessions a user may hold; a new one past it ends the oldest. */
  maxSessionsPerUser: number
}

const invalidCredentials = () => new AppError('AUTH_INVALID_CREDENTIALS', 'email or password is incorrect')

export const normaliseEmail = (email: string) => email.trim().toLowerCase()

/** A URL-safe slug from a display name ("Acme Corp!" → "acme-corp"). */
export function slugify (name: string): string {
  // NFKD splits an accented letter into the letter and its marks; the marks go, the letter stays (é → e).
  const base = name.normalize('NFKD').replace(/\p{M}+/gu, '').toLowerCase()
    .replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 40).replace(/-+$/, '')
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
    return tenants.find(t => t.id === key || t.slug === key) ??
      new AppError('TENANT_FORBIDDEN', 'this account is not a member of that tenant')
  }
  if (isOperator) return null
  if (tenants.length === 1) return tenants[0]!
  if (tenants.length === 0) return new AppError('TENANT_FORBIDDEN', 'this account belongs to no tenant')
  return new AppError('TENANT_REQUIRED', `this account belongs to ${tenants.length} tenants: pass "tenant" (id or slug)`)
}

/** Sign-up, login, refresh, logout and password changes. No Fastify in here. */
export function createAccountService ({ db, hasher, sessions, audit, log, throttle: throttleDeps, maxSessionsPerUser }: AccountDeps) {
  const actor = (user: { id: string, email: string }) => ({ type: 'user' as const, id: user.id, email: user.email })

  const throttle = createLoginThrottle(throttleDeps)

  /** Starts a session in the caller's transaction, ending the user's oldest past maxSessionsPerUser. */
  async function startSession (client: Queryable, userId: string, tenantId: string | null, meta: ClientMeta) {
    const tokens = await sessions.start(client, userId, tenantId, meta)
    const ended = await sessions.enforceLimit(client, userId, maxSessionsPerUser)
    if (ended.length) log.info({ userId, sessionsEnded: ended.length }, 'session limit reached: oldest sessions revoked')
    return tokens
  }

  return {
    async signup (input: { email: string, password: string, tenantName: string }, meta: ClientMeta): Promise<SessionEnvelope> {
      const email = normaliseEmail(input.email)
      const passwordHash = await hasher.hash(input.password)
      return db.withTransaction(async (client) => {
        const userId = randomUUID()
        const tenantId = randomUUID()
        // Accounts are created by a function of the owner's (the runtime role cannot write users).
        const { rows: [created] } = await client.query<{ ok: boolean }>(
          'SELECT auth_create_user($1, $2, $3) AS ok', [userId, email, passwordHash])
        if (!created!.ok) throw new AppError('CONFLICT', 'an account with this email already exists')
        await db.setContext(client, { userId, tenantId })
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
        const tokens = await startSession(client, userId, tenantId, meta)
        const user = { id: userId, email }
        await audit(client, 'tenant_operation_log', tenantId, {
          actor: actor(user),
          action: 'tenant.created',
          target: { type: 'tenant', id: tenantId },
          data: { name, slug, plan: 'free', lifecycle: 'trial' }
        })
        await audit(client, 'audit_log', tenantId, {
          actor: actor(user), action: 'auth.signup', target: { type: 'user', id: userId }, data: { sessionId: tokens.familyId }
        })
        return envelope(tokens, user, { id: tenantId, name, slug, role: 'owner' })
      })
    },

    async login (input: { email: string, password: string, tenant?: string }, meta: ClientMeta): Promise<SessionEnvelope> {
      // Counted before the password is checked (a refused client gets 429 here, whether or not
      // the email has an account); unknown accounts cost one argon2 verification too (a dummy
      // hash) and get the same 401.
      const address = clientKey(meta.ip)
      const row = await throttle.attempt(db, normaliseEmail(input.email), address)
      const ok = await hasher.verify(row?.password_hash ?? null, input.password)
      if (!row || !ok || row.disabled) throw invalidCredentials()
      const user = { id: row.user_id, email: row.email, password_hash: row.password_hash, is_operator: row.is_operator }

      const rehash = hasher.needsRehash(user.password_hash) ? await hasher.hash(input.password) : null
      const chosen = await db.withTransaction(async (client) => {
        await db.setContext(client, { userId: user.id })
        // The right password gives this client's failures back, and that commits even when the
        // tenant choice below is refused (a forgotten `tenant` is no failed login).
        await throttle.verified(client, address)
        if (rehash) await client.query('SELECT auth_store_password_hash($1, false)', [rehash])
        const { rows: tenants } = await client.query<TenantSummary>(
          `SELECT t.id, t.name, t.slug, m.role FROM memberships m JOIN tenants t ON t.id = m.tenant_id
            WHERE m.user_id = $1 ORDER BY m.created_at`, [user.id])
        const tenant = chooseTenant(tenants, input.tenant, user.is_operator)
        if (tenant instanceof AppError) return { refused: tenant }
        if (tenant) await db.setContext(client, { userId: user.id, tenantId: tenant.id })
        const tokens = await startSession(client, user.id, tenant?.id ?? null, meta)
        const who = { id: user.id, email: user.email }
        if (tenant) {
          await audit(client, 'audit_log', tenant.id, {
            actor: actor(who), action: 'auth.login', target: { type: 'session', id: tokens.familyId }, data: { ip: meta.ip ?? null }
          })
        } else {
          await db.setContext(client, { userId: user.id, operator: true })
          await audit(client, 'operator_audit_events', null, {
            actor: { type: 'operator', id: user.id, email: user.email },
            action: 'operator.login',
            target: { type: 'session', id: tokens.familyId },
            data: { ip: meta.ip ?? null }
          })
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
            await db.setContext(client, { userId: err.userId, tenantId: err.tenantId })
            await audit(client, 'audit_log', err.tenantId, {
              actor: { type: 'system', id: null },
              action: 'auth.refresh_reuse_detected',
              target: { type: 'session', id: err.familyId },
              data: { userId: err.userId }
            })
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
        await db.setContext(client, { userId: auth.userId, tenantId: auth.tenantId })
        await sessions.revokeFamily(client, auth.userId, auth.familyId, 'logout')
        if (auth.tenantId) {
          await audit(client, 'audit_log', auth.tenantId, {
            actor: actor({ id: auth.userId, email: auth.email }), action: 'auth.logout', target: { type: 'session', id: auth.familyId }
          })
        }
      })
    },

    /** One page of the caller's live sessions, newest first; nextCursor is null on the last page. */
    async listSessions (auth: AuthContext, page: { limit: number, cursor?: string | undefined }) {
      const after = page.cursor === undefined ? null : decodeSessionCursor(page.cursor)
      return db.withTransaction(async (client) => {
        await db.setContext(client, { userId: auth.userId })
        const { entries, nextCursor } = await sessions.list(client, auth.userId, { limit: page.limit, after })
        return { sessions: entries.map(s => ({ ...s, current: s.id === auth.familyId })), nextCursor }
      })
    },

    async revokeSession (auth: AuthContext, familyId: string): Promise<void> {
      if (!isUuid(familyId)) throw new AppError('NOT_FOUND', 'session not found')
      await db.withTransaction(async (client) => {
        await db.setContext(client, { userId: auth.userId, tenantId: auth.tenantId })
        const revoked = await sessions.revokeFamily(client, auth.userId, familyId, 'revoked_by_user')
        if (!revoked) throw new AppError('NOT_FOUND', 'session not found')
        if (auth.tenantId) {
          await audit(client, 'audit_log', auth.tenantId, {
            actor: actor({ id: auth.userId, email: auth.email }), action: 'auth.session_revoked', target: { type: 'session', id: familyId }
          })
        }
      })
    },

    /**
     * The current password is a credential check like a login's: the same counters, limits and
     * answers (a stolen access token must not buy unlimited guesses at it).
     */
    async changePassword (auth: AuthContext, currentPassword: string, newPassword: string, meta: ClientMeta): Promise<void> {
      const address = clientKey(meta.ip)
      const row = await throttle.attempt(db, normaliseEmail(auth.email), address)
      const ok = await hasher.verify(row?.password_hash ?? null, currentPassword)
      if (!row || row.user_id !== auth.userId || !ok) throw invalidCredentials()
      const hash = await hasher.hash(newPassword)
      await db.withTransaction(async (client) => {
        await db.setContext(client, { userId: auth.userId, tenantId: auth.tenantId })
        await throttle.verified(client, address)
        await client.query('SELECT auth_store_password_hash($1, true)', [hash])
        const revoked = await sessions.revokeAllForUser(client, auth.userId, 'password_changed', auth.familyId)
        if (auth.tenantId) {
          await audit(client, 'audit_log', auth.tenantId, {
            actor: actor({ id: auth.userId, email: auth.email }),
            action: 'auth.password_changed',
            target: { type: 'user', id: auth.userId },
            data: { sessionsRevoked: revoked.length }
          })
        }
      })
    },

    /** ensureOperator with this service's hasher, over a connection of its own to `ownerUrl` (MIGRATION_DATABASE_URL). */
    async ensureOperator (ownerUrl: string, email: string, password: string): Promise<'created' | 'exists'> {
      const owner = new pg.Client({ connectionString: ownerUrl, application_name: 'govula-core:operator' })
      owner.on('error', () => {}) // a failure rejects the query; the caller reports it
      await owner.connect()
      try {
        return await ensureOperator(owner, hasher, email, password)
      } finally {
        await owner.end().catch(() => {})
      }
    }
  }
}

export type AccountService = ReturnType<typeof createAccountService>

/**
 * Creates an operator if no user has this email (the boot bootstrap and `npm run
 * operator:create`). Through `owner`, a connection as the owner role (MIGRATION_DATABASE_URL):
 * the runtime role can neither write users nor set is_operator, and no function it may call
 * does, so an injected statement cannot make an operator.
 */
export async function ensureOperator (
  owner: Queryable, hasher: PasswordHasher, email: string, password: string
): Promise<'created' | 'exists'> {
  const normalised = normaliseEmail(email)
  const { rowCount: found } = await owner.query('SELECT 1 FROM users WHERE lower(email) = $1', [normalised])
  if (found) return 'exists'
  const hash = await hasher.hash(password)
  const { rowCount } = await owner.query(
    'INSERT INTO users (email, password_hash, is_operator) VALUES ($1, $2, true) ON CONFLICT ((lower(email))) DO NOTHING',
    [normalised, hash])
  return rowCount ? 'created' : 'exists'
}
