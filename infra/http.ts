const BEARER = /^Bearer ([^\s]+)$/i
const BEARER_CREDENTIALS = /^Bearer (.+)$/i

/** The token of an `Authorization: Bearer <token>` header, or null (RFC 6750 §2.1: no whitespace). */
export function bearerToken (authorization: string | undefined): string | null {
  return authorization ? BEARER.exec(authorization)?.[1] ?? null : null
}

/** Everything after `Bearer `: a shared secret (CRON_SECRET) may hold spaces. */
export function bearerCredentials (authorization: string | undefined): string | null {
  return authorization ? BEARER_CREDENTIALS.exec(authorization)?.[1] ?? null : null
}
