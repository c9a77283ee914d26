import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto'
import {
  canonicalJson, chainHead, chainTenant, GENESIS_HASH, TENANT_CHAINS,
  type AuditChain, type HeadSource, type TrustedHead
} from './audit.js'
import type { Queryable } from './database.js'

// Signed checkpoints of chain heads (docs/audit.md). The hash chain alone proves that no
// row was changed in place; it cannot prove that the tail was not cut off, or that the whole
// chain was not recomputed by someone with write access to the database. A head signed with
// a key the database never sees can: keep one outside, and later the chain must still
// contain that exact row. Ed25519, so anyone holding the public key can check a signature
// offline without being able to forge one.

const CHECKPOINT_TYPE = 'govula.audit.checkpoint'
// A PKCS#8 wrapper for a raw 32-byte Ed25519 seed (RFC 8410).
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex')
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex')

/**
 * Never a secret: what non-production processes sign with when AUDIT_SIGNING_KEY is unset,
 * so a developer's stored checkpoints stay verifiable across restarts. Proves nothing.
 */
export const DEVELOPMENT_SIGNING_KEY = createHash('sha256').update('govula development audit signing key (public, proves nothing)').digest('base64')

export interface AuditSigner {
  algorithm: 'Ed25519'
  /** First 16 hex digits of SHA-256 over the raw public key. */
  keyId: string
  /** The raw 32-byte public key, base64url: what a tenant pins to check signatures offline. */
  publicKey: string
  sign(body: string): string
  /** Checks a signature by this key or one of the previous public keys given at creation. */
  verify(body: string, signature: string, keyId: string): boolean
}

const rawPublicKey = (key: KeyObject) => (key.export({ format: 'der', type: 'spki' })).subarray(SPKI_ED25519_PREFIX.length)
const keyIdOf = (raw: Buffer) => createHash('sha256').update(raw).digest('hex').slice(0, 16)

function decodeSeed (text: string): Buffer {
  const t = text.trim()
  const bytes = /^[0-9a-f]{64}$/i.test(t) ? Buffer.from(t, 'hex') : Buffer.from(t, 'base64url')
  if (bytes.length !== 32) throw new Error('AUDIT_SIGNING_KEY must be a 32-byte Ed25519 seed (base64, base64url or hex) or a PKCS#8 PEM private key')
  return bytes
}

/**
 * The signer for AUDIT_SIGNING_KEY: a 32-byte Ed25519 seed (base64, base64url or hex; make
 * one with `openssl rand -base64 32`) or a PKCS#8 PEM. `previousPublicKeys` (raw, base64url)
 * keep checkpoints signed before a key rotation verifiable.
 */
export function createAuditSigner (secret: string, opts: { previousPublicKeys?: string[] } = {}): AuditSigner {
  const privateKey = secret.includes('-----BEGIN')
    ? createPrivateKey(secret)
    : createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, decodeSeed(secret)]), format: 'der', type: 'pkcs8' })
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new Error('AUDIT_SIGNING_KEY must be an Ed25519 key')
  const raw = rawPublicKey(createPublicKey(privateKey))
  const keyId = keyIdOf(raw)
  const verifiers = new Map<string, KeyObject>([[keyId, createPublicKey(privateKey)]])
  for (const previous of opts.previousPublicKeys ?? []) {
    const bytes = Buffer.from(previous, 'base64url')
    verifiers.set(keyIdOf(bytes), createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, bytes]), format: 'der', type: 'spki' }))
  }
  return {
    algorithm: 'Ed25519',
    keyId,
    publicKey: raw.toString('base64url'),
    sign: (body) => sign(null, Buffer.from(body, 'utf8'), privateKey).toString('base64url'),
    verify (body, signature, id) {
      const key = verifiers.get(id)
      return key !== undefined && verify(null, Buffer.from(body, 'utf8'), key, Buffer.from(signature, 'base64url'))
    }
  }
}

/**
 * The signer a process should use: AUDIT_SIGNING_KEY when set; otherwise the public
 * development key outside production, and none in production (checkpoints are then refused).
 */
export function resolveAuditSigner (key: string | undefined, nodeEnv: string): AuditSigner | null {
  if (key) return createAuditSigner(key)
  return nodeEnv === 'production' ? null : createAuditSigner(DEVELOPMENT_SIGNING_KEY)
}

/** What a checkpoint asserts; its canonical JSON is the signed `body`. */
export interface CheckpointClaim {
  type: typeof CHECKPOINT_TYPE
  v: 1
  chain: AuditChain
  tenantId: string | null
  seq: number
  hash: string
  issuedAt: string
  keyId: string
}

export interface SignedCheckpoint {
  chain: AuditChain
  tenantId: string | null
  seq: number
  hash: string
  issuedAt: string
  keyId: string
  /** The exact signed text (canonical JSON of the claim). */
  body: string
  /** Ed25519 over the UTF-8 bytes of `body`, base64url. */
  signature: string
}

export function signCheckpoint (signer: AuditSigner, head: { chain: AuditChain, tenantId: string | null, seq: number, hash: string }, issuedAt = new Date()): SignedCheckpoint {
  const claim: CheckpointClaim = { type: CHECKPOINT_TYPE, v: 1, ...head, issuedAt: issuedAt.toISOString(), keyId: signer.keyId }
  const body = canonicalJson({ ...claim })
  return { ...head, issuedAt: claim.issuedAt, keyId: signer.keyId, body, signature: signer.sign(body) }
}

export class CheckpointError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'CheckpointError'
  }
}

/** The claim of a checkpoint whose signature holds, or a CheckpointError saying why not. */
export function openCheckpoint (signer: AuditSigner, cp: { body: string, signature: string }): CheckpointClaim {
  let claim: CheckpointClaim
  try {
    claim = JSON.parse(cp.body) as CheckpointClaim
  } catch {
    throw new CheckpointError('checkpoint body is not JSON')
  }
  if (claim === null || typeof claim !== 'object' || claim.type !== CHECKPOINT_TYPE || claim.v !== 1 ||
      !Number.isSafeInteger(claim.seq) || claim.seq < 0 || typeof claim.hash !== 'string' || typeof claim.keyId !== 'string') {
    throw new CheckpointError('not a govula audit checkpoint')
  }
  if (!signer.verify(cp.body, cp.signature, claim.keyId)) throw new CheckpointError(`checkpoint signature does not verify (key ${claim.keyId})`)
  return claim
}

interface StoredRow { seq: string, hash: string, chain: string, tenant_id: string | null, body: string, signature: string }

const storedSql = (tenantScope: string, seqCond: string, limit = '') =>
  `SELECT seq, hash, chain, tenant_id, body, signature FROM audit_checkpoints
    WHERE chain = $1 AND ${tenantScope} AND ${seqCond} ORDER BY seq ${limit}`

/**
 * The checkpoints stored in audit_checkpoints, as a HeadSource for verifyChain, read range by
 * range as the walk advances (never all at once). A stored checkpoint whose signature fails,
 * or whose columns disagree with what was signed, is reported at its seq: someone edited it.
 */
export function storedCheckpoints (client: Queryable, signer: AuditSigner, chain: AuditChain, givenTenant: string | null): HeadSource {
  const tenantId = chainTenant(chain, givenTenant)
  const tenantScope = tenantId === null ? 'tenant_id IS NULL AND $2::uuid IS NULL' : 'tenant_id = $2'
  const check = (r: StoredRow): TrustedHead | { seq: number, problem: string } => {
    const seq = Number(r.seq)
    try {
      const claim = openCheckpoint(signer, r)
      if (claim.chain !== chain || claim.tenantId !== tenantId || claim.seq !== seq || claim.hash !== r.hash) {
        return { seq, problem: `the stored checkpoint at seq ${seq} does not match what was signed` }
      }
      return { seq: claim.seq, hash: claim.hash, issuedAt: claim.issuedAt }
    } catch (err) {
      return { seq, problem: `stored checkpoint at seq ${seq}: ${(err as Error).message}` }
    }
  }
  return {
    async between (lo, hi) {
      const { rows } = await client.query<StoredRow>(storedSql(tenantScope, 'seq > $3 AND seq <= $4'), [chain, tenantId, lo, hi])
      return rows.map(check)
    },
    async after (seq) {
      const { rows: [row] } = await client.query<StoredRow>(storedSql(tenantScope, 'seq > $3', 'LIMIT 1'), [chain, tenantId, seq])
      return row ? check(row) : null
    }
  }
}

/**
 * Signs the current heads of a scope's chains (a tenant's two chains, or the operator chain
 * when tenantId is null) and stores them, in the caller's transaction and tenant/operator
 * context. A head already covered by a stored checkpoint of the same key is not stored again:
 * the scheduler can run this every few minutes without filling the table.
 */
export async function createCheckpoints (client: Queryable, signer: AuditSigner, givenTenant: string | null, now = new Date()): Promise<SignedCheckpoint[]> {
  const tenantId = givenTenant === null ? null : givenTenant.toLowerCase()
  const chains: readonly AuditChain[] = tenantId === null ? ['operator_audit_events'] : TENANT_CHAINS
  const out: SignedCheckpoint[] = []
  for (const chain of chains) {
    const head = await chainHead(client, chain, tenantId)
    const tenantScope = tenantId === null ? 'tenant_id IS NULL AND $2::uuid IS NULL' : 'tenant_id = $2'
    const { rows: [latest] } = await client.query<StoredRow & { issued_at: Date, key_id: string }>(
      `SELECT seq, hash, chain, tenant_id, body, signature, issued_at, key_id FROM audit_checkpoints
        WHERE chain = $1 AND ${tenantScope} AND seq = $3 AND hash = $4 AND key_id = $5 ORDER BY issued_at DESC LIMIT 1`,
      [chain, tenantId, head.seq, head.hash, signer.keyId])
    if (latest) {
      out.push({ chain, tenantId, seq: head.seq, hash: head.hash, issuedAt: latest.issued_at.toISOString(), keyId: latest.key_id, body: latest.body, signature: latest.signature })
      continue
    }
    const cp = signCheckpoint(signer, { chain, tenantId, ...head }, now)
    await client.query(
      `INSERT INTO audit_checkpoints (chain, tenant_id, seq, hash, issued_at, key_id, body, signature)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
      [chain, tenantId, cp.seq, cp.hash, cp.issuedAt, cp.keyId, cp.body, cp.signature])
    out.push(cp)
  }
  return out
}

/**
 * Turns checkpoints handed back by their keeper into trusted heads per chain, after checking
 * each signature and that it belongs to `tenantId`'s chains. Throws CheckpointError otherwise.
 */
export function trustedHeads (signer: AuditSigner, givenTenant: string | null, checkpoints: Array<{ body: string, signature: string }>): Map<AuditChain, TrustedHead[]> {
  const tenantId = givenTenant === null ? null : givenTenant.toLowerCase()
  const heads = new Map<AuditChain, TrustedHead[]>()
  for (const cp of checkpoints) {
    const claim = openCheckpoint(signer, cp)
    if (claim.tenantId !== tenantId) throw new CheckpointError('checkpoint belongs to another tenant')
    if (claim.seq === 0 && claim.hash !== GENESIS_HASH) throw new CheckpointError('checkpoint of an empty chain with a non-genesis hash')
    heads.set(claim.chain, [...heads.get(claim.chain) ?? [], { seq: claim.seq, hash: claim.hash, issuedAt: claim.issuedAt }])
  }
  return heads
}
