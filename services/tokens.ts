import { createHash, randomBytes } from 'node:crypto'
import { isUuid } from '../infra/database.js'

// Tokens are `<user id, 32 hex>.<256 random bits, base64url>`. The user id is not secret: it
// lets the lookup run under row-level security as that user (a forged prefix only finds
// nothing). Only the SHA-256 of the whole token is stored.
const TOKEN = /^([0-9a-f]{32})\.([A-Za-z0-9_-]{43})$/

export function newToken (userId: string): string {
  return `${userId.replace(/-/g, '')}.${randomBytes(32).toString('base64url')}`
}

export function hashToken (token: string): Buffer {
  return createHash('sha256').update(token).digest()
}

/** The user id a well-formed token claims, or null for anything malformed. */
export function tokenUserId (token: string): string | null {
  const m = TOKEN.exec(token)
  if (!m) return null
  const h = m[1]!
  const id = `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`
  return isUuid(id) ? id : null
}
