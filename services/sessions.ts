import { createCipheriv, createDecipheriv, createHash, randomBytes, randomUUID } from 'node:crypto'
import { isIP } from 'node:net'
import type pg from 'pg'
import { AppError } from '../errors.js'
import type { Database, HeldTransaction, Queryable } from '../infra/database.js'
import { hashToken, newToken, tokenUserId } from './tokens.js'

export type Role = 'owner' | 'admin' | 'member'

/** Who is calling, resolved from the bearer token on every request (never cached). */
export interface AuthContext {
  sessionId: string
  /** The family id: the session the user sees, lists and revokes. */
  familyId: string
  userId: string
  email: string
  isOperator: boolean
  tenantId: string | null
  role: Role | null
}

/** A row of auth_resolve_access(). */
interface AccessRow {
  session_id: string, family_id: string, user_id: string, email: string, is_operator: boolean, tenant_id: string | null, role: Role | null
}

const toAuthContext = (row: AccessRow): AuthContext => ({
  sessionId: row.session_id,
  familyId: row.family_id,
  userId: row.user_id,
  email: row.email,
  isOperator: row.is_operator,
  tenantId: row.tenant_id,
  role: row.role
})

export interface SessionPolicy {
  accessTtlS: number
  refreshTtlS: number
  idleTimeoutS: number
  reuseGraceS: number
}

export interface ClientMeta { ip?: string | null, userAgent?: string | null }

export interface IssuedTokens {
  accessToken: string
  refreshToken: string
  expiresIn: number
  familyId: string
  rowId: string
}

export interface RefreshResult {
  tokens: IssuedTokens
  userId: string
  tenantId: string | null
}

/** The refresh outcome that must be committed before it is reported: the family was revoked. */
export class RefreshReuseDetected extends Error {
  constructor (readonly familyId: string, readonly userId: string, readonly tenantId: string | null) {
    super('refresh token reused after its grace window')
  }
}

export const invalidToken = () => new AppError('AUTH_INVALID_TOKEN', 'the token is invalid, expired or revoked')

// The successor's tokens, sealed under a key only the holder of the spent refresh token can
// derive (AES-256-GCM, random nonce).
function seal (refreshToken: string, tokens: { accessToken: string, refreshToken: string }): Buffer {
  const key = createHash('sha256').update('govula.refresh-grace\0').update(refreshToken).digest()
  const iv = randomBytes(12)
  const cipher = createCipheriv('aes-256-gcm', key, iv)
  const body = Buffer.concat([cipher.update(JSON.stringify(tokens), 'utf8'), cipher.final()])
  return Buffer.concat([iv, cipher.getAuthTag(), body])
}

function unseal (refreshToken: string, sealed: Buffer): { accessToken: string, refreshToken: string } | null {
  try {
    const key = createHash('sha256').update('govula.refresh-grace\0').update(refreshToken).digest()
    const decipher = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, 12))
    decipher.setAuthTag(sealed.subarray(12, 28))
    return JSON.parse(Buffer.concat([decipher.update(sealed.subarray(28)), decipher.final()]).toString('utf8'))
  } catch {
    return null
  }
}

// Behind TRUST_PROXY the client's address is whatever X-Forwarded-For claims: only one that
// Postgres' inet accepts is stored (an IPv6 zone id is not), anything else is recorded as unknown.
function storableIp (ip: string | null | undefined): string | null {
  const bare = ip?.replace(/%.*$/, '')
  return bare && isIP(bare) ? bare : null
}

interface RefreshRow {
  id: string
  family_id: string
  user_id: string
  tenant_id: string | null
  absolute_expires_at: Date
  successor_id: string | null
  grace_payload: Buffer | null
  revoked: boolean
  live: boolean
  spent: boolean
  ended: boolean
  within_grace: boolean
}

/** A position in the sessions list: the family's start (epoch microseconds) and its id. */
export interface SessionPosition { startedUs: string, id: string }

// Opaque to clients (they pass nextCursor back as they got it); base64url keeps it URL-safe.
const encodeSessionCursor = (p: SessionPosition) => Buffer.from(`${p.startedUs}~${p.id}`).toString('base64url')
export function decodeSessionCursor (cursor: string): SessionPosition {
  const decoded = Buffer.from(cursor, 'base64url').toString()
  const match = /^(\d{1,18})~([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/.exec(decoded)
  if (!match) {
    const message = 'is not a cursor this service issued'
    throw new AppError('VALIDATION_FAILED', `querystring.cursor ${message}`, { errors: [{ field: 'querystring.cursor', message }] })
  }
  return { startedUs: match[1]!, id: match[2]! }
}

// A family's live head, and when the family started (its first row; a refresh adds rows).
const LIVE_FAMILIES = `
  SELECT h.family_id, h.tenant_id, h.last_used_at, h.ip, h.user_agent,
         (SELECT min(r.created_at) FROM auth_sessions r WHERE r.family_id = h.family_id) AS started
    FROM auth_sessions h
   WHERE h.user_id = $1 AND h.revoked_at IS NULL AND h.rotated_at IS NULL
     AND h.absolute_expires_at > now() AND h.idle_expires_at > now()`

export interface SessionListEntry {
  id: string
  tenantId: string | null
  createdAt: Date
  lastUsedAt: Date
  ip: string | null
  userAgent: string | null
}

/** Sessions and refresh tokens in Postgres: any replica can serve any request. */
export function createSessionService ({ db, policy }: { db: Database, policy: SessionPolicy }) {
  const idle = `${policy.idleTimeoutS} seconds`

  /**
   * The bearer lookup as a statement for the simple protocol, which takes no parameters: it
   * carries literals, safe only because each is strictly validated (a UUID, hex digits and an
   * integer). Null for a token that names no user.
   */
  function lookupStatement (accessToken: string): string | null {
    const userId = tokenUserId(accessToken)
    if (!userId) return null
    return `SELECT * FROM auth_resolve_access('${userId}', '\\x${hashToken(accessToken).toString('hex')}', '${idle}')`
  }

  async function insertRow (client: Queryable, row: {
    userId: string
    tenantId: string | null
    familyId: string
    parentId: string | null
    absoluteExpiresAt: Date | null
    meta: ClientMeta
  }): Promise<IssuedTokens> {
    const accessToken = newToken(row.userId)
    const refreshToken = newToken(row.userId)
    const id = randomUUID()
    await client.query(
      `INSERT INTO auth_sessions (id, family_id, parent_id, user_id, tenant_id, access_token_hash, refresh_token_hash,
         access_expires_at, idle_expires_at, absolute_expires_at, ip, user_agent)
       VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8), now() + $9::interval,
         coalesce($10, now() + make_interval(secs => $11)), $12, $13)`,
      [id, row.familyId, row.parentId, row.userId, row.tenantId, hashToken(accessToken), hashToken(refreshToken),
        policy.accessTtlS, idle, row.absoluteExpiresAt, policy.refreshTtlS, storableIp(row.meta.ip),
        row.meta.userAgent?.slice(0, 512) ?? null])
    return { accessToken, refreshToken, expiresIn: policy.accessTtlS, familyId: row.familyId, rowId: id }
  }

  /**
   * Revokes the live rows matching `where` ($2…) until a pass finds none; returns their family
   * ids. A refresh that held one of these rows while the UPDATE waited for it commits a
   * successor the statement's snapshot cannot see; the next pass does (READ COMMITTED takes a
   * new snapshot per statement), so no successor outlives a logout or a reuse detection.
   */
  async function revokeWhere (client: Queryable, reason: string, where: string, params: unknown[]): Promise<string[]> {
    const families = new Set<string>()
    for (;;) {
      const { rows } = await client.query<{ family_id: string }>(
        `UPDATE auth_sessions SET revoked_at = now(), revoked_reason = $1 WHERE revoked_at IS NULL AND ${where} RETURNING family_id`,
        [reason, ...params])
      if (rows.length === 0) return [...families]
      for (const row of rows) families.add(row.family_id)
    }
  }

  return {
    /** Starts a session (a new token family) inside the caller's transaction. */
    start (client: Queryable, userId: string, tenantId: string | null, meta: ClientMeta) {
      return insertRow(client, { userId, tenantId, familyId: randomUUID(), parentId: null, absoluteExpiresAt: null, meta })
    },

    /** The hot path: one round trip, no cache, so a revocation holds on the very next request everywhere. */
    async resolve (accessToken: string): Promise<AuthContext | null> {
      const userId = tokenUserId(accessToken)
      if (!userId) return null
      const { rows: [row] } = await db.query<AccessRow>(
        'SELECT * FROM auth_resolve_access($1, $2, $3::interval)', [userId, hashToken(accessToken), idle])
      return row ? toAuthContext(row) : null
    },

    /**
     * resolve() that leaves its transaction open, in the session's tenant, for the request to
     * read in: BEGIN and the lookup travel as one round trip, and the caller's first query
     * runs in the same transaction. The caller must end the transaction (the auth plugin
     * does, when the response is sent).
     */
    async resolveHeld (accessToken: string): Promise<{ auth: AuthContext, transaction: HeldTransaction } | null> {
      const lookup = lookupStatement(accessToken)
      if (!lookup) return null
      const { transaction, results } = await db.hold(`BEGIN; ${lookup}`)
      const row = results[1]!.rows[0] as AccessRow | undefined
      if (!row) {
        await transaction.end()
        return null
      }
      return { auth: toAuthContext(row), transaction }
    },

    /**
     * resolve() and `read` in one transaction and one round trip: BEGIN, the lookup, the read
     * in the session's tenant, COMMIT. `read` must be a constant statement that takes its
     * tenant from the transaction (app_tenant_id()), never from the request. It runs before
     * anyone here knows whether the token is good: auth_resolve_access leaves the transaction
     * in exactly withTenant's scope when the hash matched a live session (the session's
     * tenant, no user scope), and in no context at all otherwise, so the read sees nothing.
     */
    async resolveAndRead (accessToken: string, read: string): Promise<{ auth: AuthContext, read: pg.QueryResult } | null> {
      const lookup = lookupStatement(accessToken)
      if (!lookup) return null
      const results = await db.batch(`BEGIN; ${lookup}; ${read}; COMMIT`)
      const row = results[1]!.rows[0] as AccessRow | undefined
      return row ? { auth: toAuthContext(row), read: results[2]! } : null
    },

    /**
     * Rotation with reuse detection (RFC 9700 §4.14.2). The row is locked, so concurrent
     * refreshes with one token produce exactly one successor; the losers, and a client
     * replaying within the grace window, get that same successor. A replay after the window
     * revokes the whole family: RefreshReuseDetected (the caller commits, then answers 401).
     */
    async refresh (client: pg.PoolClient, refreshToken: string, meta: ClientMeta): Promise<RefreshResult> {
      const userId = tokenUserId(refreshToken)
      if (!userId) throw invalidToken()
      await db.setContext(client, { userId })
      const select = `SELECT s.id, s.family_id, s.user_id, s.tenant_id, s.absolute_expires_at, s.successor_id, s.grace_payload,
              s.revoked_at IS NOT NULL AS revoked,
              (s.absolute_expires_at > now() AND s.idle_expires_at > now() AND u.disabled_at IS NULL
                AND (s.tenant_id IS NULL
                     OR EXISTS (SELECT 1 FROM memberships m WHERE m.tenant_id = s.tenant_id AND m.user_id = s.user_id))) AS live,
              s.rotated_at IS NOT NULL AS spent,
              s.absolute_expires_at <= now() AS ended,
              coalesce(s.rotated_at > now() - make_interval(secs => $2), false) AS within_grace
         FROM auth_sessions s JOIN users u ON u.id = s.user_id`
      const { rows: [row] } = await client.query<RefreshRow>(`${select} WHERE s.refresh_token_hash = $1 AND s.user_id = $3 FOR UPDATE OF s`,
        [hashToken(refreshToken), policy.reuseGraceS, userId])
      if (!row || row.revoked) throw invalidToken()

      if (!row.spent) {
        if (!row.live) throw invalidToken()
        const tokens = await insertRow(client, {
          userId, tenantId: row.tenant_id, familyId: row.family_id, parentId: row.id, absoluteExpiresAt: row.absolute_expires_at, meta
        })
        await client.query('UPDATE auth_sessions SET rotated_at = now(), successor_id = $2, grace_payload = $3 WHERE id = $1',
          [row.id, tokens.rowId, seal(refreshToken, tokens)])
        return { tokens, userId, tenantId: row.tenant_id }
      }

      if (row.within_grace) {
        if (!row.live) throw invalidToken()
        // Walk to the family's current head, unsealing each successor with its predecessor's token.
        let current = row
        let token = refreshToken
        for (let hops = 0; hops < 16 && current.spent && current.grace_payload; hops++) {
          const next = unseal(token, current.grace_payload)
          if (!next) break
          const { rows: [succ] } = await client.query<RefreshRow>(`${select} WHERE s.id = $1 AND s.user_id = $3`,
            [current.successor_id, policy.reuseGraceS, userId])
          if (!succ || succ.revoked || !succ.live) break
          current = succ
          token = next.refreshToken
          if (!succ.spent) {
            return {
              tokens: {
                accessToken: next.accessToken,
                refreshToken: next.refreshToken,
                expiresIn: policy.accessTtlS,
                familyId: succ.family_id,
                rowId: succ.id
              },
              userId,
              tenantId: succ.tenant_id
            }
          }
        }
        throw invalidToken()
      }

      // A spent token after the window is reuse even when its own row has gone idle: the
      // spent row is never touched again, while a thief's branch of the family stays live.
      // Only a family past its absolute lifetime (all of it) has nothing left to revoke.
      if (row.ended) throw invalidToken()
      await revokeWhere(client, 'refresh_token_reused', 'family_id = $2', [row.family_id])
      throw new RefreshReuseDetected(row.family_id, userId, row.tenant_id)
    },

    /** Revokes a whole family (a session). True when something was revoked. */
    async revokeFamily (client: Queryable, userId: string, familyId: string, reason: string): Promise<boolean> {
      return (await revokeWhere(client, reason, 'family_id = $2 AND user_id = $3', [familyId, userId])).length > 0
    },

    /** Revokes every session of a user but `keepFamily`; returns the revoked family ids. */
    async revokeAllForUser (client: Queryable, userId: string, reason: string, keepFamily?: string): Promise<string[]> {
      return revokeWhere(client, reason, 'user_id = $2 AND family_id IS DISTINCT FROM $3::uuid', [userId, keepFamily ?? null])
    },

    /**
     * Ends the user's oldest live sessions (by when each family started) past `max`; returns
     * their family ids. Concurrent logins of one user queue on a lock for the rest of their
     * transactions, so together they cannot leave more than `max`.
     */
    async enforceLimit (client: Queryable, userId: string, max: number): Promise<string[]> {
      await client.query('SELECT pg_advisory_xact_lock(727009001, hashtext($1))', [userId])
      const { rows } = await client.query<{ family_id: string }>(
        `SELECT family_id FROM (${LIVE_FAMILIES}) live ORDER BY started DESC, family_id DESC OFFSET $2`, [userId, max])
      if (rows.length === 0) return []
      return revokeWhere(client, 'session_limit', 'user_id = $2 AND family_id = ANY($3::uuid[])', [userId, rows.map(r => r.family_id)])
    },

    /**
     * A page of the user's live sessions, one entry per family (its current head), newest
     * first by when the family started: that never changes, so pages neither skip nor repeat
     * a session that is used while a client pages.
     */
    async list (client: Queryable, userId: string, page: { limit: number, after: SessionPosition | null }) {
      const { rows } = await client.query<SessionListEntry & { position: string }>(
        `SELECT family_id AS id, tenant_id AS "tenantId", started AS "createdAt", last_used_at AS "lastUsedAt",
                host(ip) AS ip, user_agent AS "userAgent", (extract(epoch FROM started) * 1000000)::bigint::text AS position
           FROM (${LIVE_FAMILIES}) live
          WHERE $2::bigint IS NULL OR ((extract(epoch FROM started) * 1000000)::bigint, family_id) < ($2::bigint, $3::uuid)
          ORDER BY started DESC, family_id DESC
          LIMIT $4`, [userId, page.after?.startedUs ?? null, page.after?.id ?? null, page.limit + 1])
      const more = rows.length > page.limit
      const entries = rows.slice(0, page.limit).map(({ position: _, ...entry }) => entry)
      const last = rows[page.limit - 1]
      return { entries, nextCursor: more && last ? encodeSessionCursor({ startedUs: last.position, id: last.id }) : null }
    }
  }
}

export type SessionService = ReturnType<typeof createSessionService>
