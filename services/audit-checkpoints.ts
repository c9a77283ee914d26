import {
  canonicalJson, chainHead, chainTenant, GENESIS_HASH, TENANT_CHAINS,
  type AuditChain, type HeadSource, type TrustedHead
} from './audit.js'
import type { AuditSigner } from '../infra/audit-signer.js'
import type { Queryable } from '../infra/database.js'

// Signed checkpoints of chain heads (docs/audit.md). The hash chain alone proves that no
// row was changed in place; it cannot prove that the tail was not cut off, or that the whole
// chain was not recomputed by someone with write access to the database. A head signed with
// a key the database never sees can: keep one outside, and later the chain must still
// contain that exact row. Ed25519, so anyone holding the public key can check a signature
// offline without being able to forge one.

const CHECKPOINT_TYPE = 'govula.audit.checkpoint'
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

export function signCheckpoint (
  signer: AuditSigner, head: { chain: AuditChain, tenantId: string | null, seq: number, hash: string }, issuedAt = new Date()
): SignedCheckpoint {
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
  if (!signer.verify(cp.body, cp.signature, claim.keyId)) {
    throw new CheckpointError(`checkpoint signature does not verify (key ${claim.keyId})`)
  }
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
export async function createCheckpoints (
  client: Queryable, signer: AuditSigner, givenTenant: string | null, now = new Date()
): Promise<SignedCheckpoint[]> {
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
      out.push({
        chain,
        tenantId,
        seq: head.seq,
        hash: head.hash,
        issuedAt: latest.issued_at.toISOString(),
        keyId: latest.key_id,
        body: latest.body,
        signature: latest.signature
      })
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
export function trustedHeads (
  signer: AuditSigner, givenTenant: string | null, checkpoints: Array<{ body: string, signature: string }>
): Map<AuditChain, TrustedHead[]> {
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
