import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto'

// The Ed25519 key that signs audit checkpoints (services/audit-checkpoints.ts): parsed from
// AUDIT_SIGNING_KEY once, by config (to refuse a bad key at boot) and by the composition root.

// A PKCS#8 wrapper for a raw 32-byte Ed25519 seed (RFC 8410).
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex')
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex')

/**
 * Never a secret: what non-production processes sign with when AUDIT_SIGNING_KEY is unset,
 * so a developer's stored checkpoints stay verifiable across restarts. Proves nothing.
 */
export const DEVELOPMENT_SIGNING_KEY = createHash('sha256')
  .update('govula development audit signing key (public, proves nothing)')
  .digest('base64')

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
  if (bytes.length !== 32) {
    throw new Error('AUDIT_SIGNING_KEY must be a 32-byte Ed25519 seed (base64, base64url or hex) or a PKCS#8 PEM private key')
  }
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
export function resolveAuditSigner (
  { AUDIT_SIGNING_KEY: key, NODE_ENV: nodeEnv }: { AUDIT_SIGNING_KEY?: string, NODE_ENV: string }
): AuditSigner | null {
  if (key) return createAuditSigner(key)
  return nodeEnv === 'production' ? null : createAuditSigner(DEVELOPMENT_SIGNING_KEY)
}
