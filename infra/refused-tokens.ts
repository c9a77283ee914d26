import { hashToken } from '../services/tokens.js'

/** A window that is spent, as a refused request saw it: the tenant's, or the user's share of it. */
export interface Refusal { policy: 'tenant' | 'user', tenantId: string, resetAt: number, limit: number, windowS: number }

/**
 * Access tokens whose tenant has spent its request budget (or whose user has spent its share
 * of it: a token is one session of one user), remembered until the window resets,
 * so that a flood is refused again before its session lookup (a Postgres round trip): a
 * refusal then costs the flooder's neighbours next to nothing. Keyed by a hash, so no token
 * sits in memory longer than its request. Bounded: past `max` entries it starts afresh, and
 * the worst that costs is a lookup per token again.
 *
 * A remembered refusal can outlive what it stood for by at most the rest of its window
 * (≤ 60 s): a token revoked meanwhile still reads 429 rather than 401 (a refusal either way),
 * and a raised limit is seen at once only through `forgetTenant`, which the entitlement
 * change events call.
 */
export function createRefusedTokens ({ now = Date.now, max = 10_000 }: { now?: () => number, max?: number } = {}) {
  const byToken = new Map<string, Refusal>()
  const key = (token: string) => hashToken(token).toString('base64')
  return {
    remember (token: string, refusal: Refusal) {
      if (byToken.size >= max) byToken.clear()
      byToken.set(key(token), refusal)
    },
    /** The live refusal for this token, or null. Costs nothing while no tenant is refused. */
    lookup (token: string): Refusal | null {
      if (byToken.size === 0) return null
      const k = key(token)
      const refusal = byToken.get(k)
      if (!refusal) return null
      if (refusal.resetAt <= now()) {
        byToken.delete(k)
        return null
      }
      return refusal
    },
    forgetTenant (tenantId: string) {
      for (const [k, refusal] of byToken) if (refusal.tenantId === tenantId) byToken.delete(k)
    },
    get size () { return byToken.size }
  }
}
