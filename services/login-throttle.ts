import { isIPv4, isIPv6 } from 'node:net'
import { AppError } from '../errors.js'
import type { Database, Queryable } from '../infra/database.js'

/**
 * Brute-force protection for credential checks (login, and the current password of a password
 * change), in Postgres so every replica shares it (auth_credential_attempt,
 * db/migrations/0009_credentials.sql; the model and its figures are in docs/auth.md).
 */
export interface ThrottlePolicy {
  /** Failures one client may make on one email in its hour before it is refused there. */
  maxFailuresPerClient: number
  /** Failures on one email in an hour past which only clients that have not failed on it get through. */
  maxFailuresPerAccount: number
  /** How long a client that has not failed waits while its email is past that ceiling. */
  ceilingDelayMs: number
}

export interface CredentialRow {
  user_id: string
  email: string
  password_hash: string
  is_operator: boolean
  disabled: boolean
}

interface AttemptRow extends Partial<CredentialRow> {
  verdict: 'allowed' | 'slowed' | 'refused'
  retry_after_s: number | null
}

const IPV4_MAPPED = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i

/** The first four groups of an IPv6 address (its /64), in canonical hex. */
function ipv6Prefix64 (address: string): string {
  const [head = '', tail] = address.split('::') as [string, string | undefined]
  const groups = (part: string) => part.split(':').filter(g => g !== '').flatMap(g => {
    if (!g.includes('.')) return [g]
    const [a, b, c, d] = g.split('.').map(Number) as [number, number, number, number]
    return [((a << 8) | b).toString(16), ((c << 8) | d).toString(16)]
  })
  const front = groups(head)
  const back = tail === undefined ? [] : groups(tail)
  const all = tail === undefined ? front : [...front, ...Array(8 - front.length - back.length).fill('0'), ...back]
  return all.slice(0, 4).map(g => parseInt(g, 16).toString(16)).join(':')
}

/**
 * Whom failures are counted against: an IPv4 address, or an IPv6 client's /64 (one subscriber
 * or host usually holds a whole /64, and would otherwise get a fresh budget per address).
 * Anything that is not an address shares one bucket, 'unknown'.
 */
export function clientKey (ip: string | null | undefined): string {
  const bare = ip?.replace(/%.*$/, '') ?? ''
  const mapped = IPV4_MAPPED.exec(bare)?.[1]
  if (mapped && isIPv4(mapped)) return mapped
  if (isIPv4(bare)) return bare
  if (isIPv6(bare)) return `${ipv6Prefix64(bare)}::/64`
  return 'unknown'
}

/** The one answer of a refused attempt, whether or not the email has an account. */
function refused (retryAfterS: number): AppError {
  return new AppError('RATE_LIMITED', 'too many failed attempts for this account from this client; try again later',
    { headers: { 'retry-after': String(retryAfterS) } })
}

export function createLoginThrottle (
  policy: ThrottlePolicy, sleep = (ms: number) => new Promise<void>(resolve => setTimeout(resolve, ms))
) {
  return {
    /**
     * Counts one attempt on `email` (normalised) from `client` before the password is checked,
     * and returns the account's row to check it against (none for an unknown email). Throws
     * 429 when this client is refused on this email; waits ceilingDelayMs first when the email
     * is past its ceiling and this client has not failed on it.
     */
    async attempt (db: Pick<Database, 'query' | 'context'>, email: string, client: string): Promise<CredentialRow | null> {
      const limits = { maxFailuresPerClient: policy.maxFailuresPerClient, maxFailuresPerAccount: policy.maxFailuresPerAccount }
      // The hash comes out only with the service's proof for this email, client and limits.
      const proof = db.context.credentialProof({ email, client, ...limits })
      const { rows: [row] } = await db.query<AttemptRow>(
        'SELECT * FROM auth_credential_attempt($1, $2, $3, $4, $5)',
        [proof, email, client, limits.maxFailuresPerClient, limits.maxFailuresPerAccount])
      if (row!.verdict === 'refused') throw refused(row!.retry_after_s ?? 1)
      if (row!.verdict === 'slowed' && policy.ceilingDelayMs > 0) await sleep(policy.ceilingDelayMs)
      return row!.user_id ? row as CredentialRow : null
    },

    /** A verified password gives back its client's failures; in the transaction that acts as the user. */
    async verified (tx: Queryable, client: string): Promise<void> {
      await tx.query('SELECT auth_credential_verified($1)', [client])
    }
  }
}

export type LoginThrottle = ReturnType<typeof createLoginThrottle>
