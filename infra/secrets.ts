import { createHash, timingSafeEqual } from 'node:crypto'

const digest = (value: string) => createHash('sha256').update(value).digest()

/**
 * A matcher for a comma-separated list of secrets (rotation: `CRON_SECRET=new,old`), in
 * constant time: fixed-length digests are compared (timingSafeEqual throws on unequal
 * lengths), and every configured secret is compared, whichever matches.
 */
export function secretMatcher (configured: string) {
  const secrets = configured.split(',').map(s => s.trim()).filter(Boolean).map(digest)
  return (candidate: string) => {
    const given = digest(candidate)
    let ok = false
    for (const s of secrets) ok = timingSafeEqual(s, given) || ok
    return ok
  }
}
