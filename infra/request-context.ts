import { createHash, createHmac } from 'node:crypto'
import pg from 'pg'
import { AppError } from '../errors.js'

// The row-level security context (db/migrations/0012_request_context.sql): one setting,
// app.context = "<tenant>:<user>:<1|0>:<expires>/<HMAC-SHA256 hex>", which the policies' helper functions
// believe only when the MAC verifies under a key that the runtime role cannot read. The service
// reads the key once, through the owner connection, and signs what it has decided (a verified
// password, refresh token or session, or a job); a statement smuggled into a query cannot.

export interface RequestContext {
  tenantId?: string | null
  userId?: string | null
  operator?: boolean
}

interface KeyReader { query(sql: string): Promise<{ rows: Array<Record<string, unknown>> }> }

export interface ContextSigner {
  /** True once the key has been read: until then every sign() is refused with a 503. */
  readonly loaded: boolean
  /** Reads the key through an owner-role connection (the readiness check does, at boot). */
  load(owner: KeyReader): Promise<void>
  /** The signed app.context value. Its characters are hex, '-', ':' and '/': safe as a literal. */
  sign(context: RequestContext): string
  /** `SELECT set_config('app.context', …, true)` for this context, as one literal statement. */
  statement(context: RequestContext): string
  /**
   * The proof auth_credential_attempt asks for before it hands out a password hash: the
   * service vouches for this email, client and these limits (a statement cannot, lacking the key).
   */
  credentialProof(attempt: CredentialAttempt): string
}

export interface CredentialAttempt { email: string, client: string, maxFailuresPerClient: number, maxFailuresPerAccount: number }

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

function part (value: string | null | undefined, name: string): string {
  if (value === null || value === undefined || value === '') return ''
  // Postgres prints a uuid in lower case; the payload is compared as text.
  if (!UUID.test(value)) throw new TypeError(`request context: ${name} must be a UUID`)
  return value.toLowerCase()
}

/** How long a signed context may wait for its transaction to start (seconds). */
export const CONTEXT_VALID_S = 300

export function createContextSigner (): ContextSigner {
  let key: Buffer | undefined
  // The database's clock judges expiry: the difference to ours, measured when the key is read.
  let offsetS = 0
  const mac = (payload: string) => {
    if (!key) throw new AppError('SERVICE_UNAVAILABLE', 'the service is starting: retry shortly', { headers: { 'retry-after': '1' } })
    return createHmac('sha256', key).update(payload).digest('hex')
  }
  const expiry = () => Math.floor(Date.now() / 1000 + offsetS) + CONTEXT_VALID_S
  const signer: ContextSigner = {
    get loaded () { return key !== undefined },
    async load (owner) {
      const { rows: [row] } = await owner.query('SELECT key, extract(epoch FROM clock_timestamp())::float8 AS now FROM request_context_key')
      if (!row || !Buffer.isBuffer(row.key)) throw new Error('the request-context key is missing (are the migrations applied?)')
      offsetS = Number(row.now) - Date.now() / 1000
      key = row.key
    },
    sign (context) {
      const payload = `${part(context.tenantId, 'tenantId')}:${part(context.userId, 'userId')}:${context.operator ? '1' : '0'}:${expiry()}`
      return `${payload}/${mac(payload)}`
    },
    credentialProof ({ email, client, maxFailuresPerClient, maxFailuresPerAccount }) {
      // The same text auth_credential_attempt rebuilds (db/migrations/0012_request_context.sql).
      const expires = expiry()
      const emailHash = createHash('sha256').update(email).digest('hex')
      return `${expires}/${mac(`credential|${emailHash}|${client}|${maxFailuresPerClient}|${maxFailuresPerAccount}|${expires}`)}`
    },
    statement (context) {
      return `SELECT set_config('app.context', '${signer.sign(context)}', true)`
    }
  }
  return signer
}

/** Reads the key into `signer` through one short-lived owner-role connection. */
export async function loadContextKey (signer: ContextSigner, ownerUrl: string): Promise<ContextSigner> {
  const client = new pg.Client({ connectionString: ownerUrl, application_name: 'govula-core:context-key' })
  client.on('error', () => {}) // a failure rejects the query; the caller reports it
  await client.connect()
  try {
    await signer.load(client)
  } finally {
    await client.end().catch(() => {})
  }
  return signer
}
