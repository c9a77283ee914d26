import net from 'node:net'

/**
 * Which proxies may name the client in X-Forwarded-For: none (false), the last N hops (a
 * number), or the proxies whose addresses are in a comma-separated list of IPs, CIDRs and
 * proxy-addr's names (loopback, linklocal, uniquelocal).
 */
export type TrustProxy = false | number | string

const NAMED_RANGES = new Set(['loopback', 'linklocal', 'uniquelocal'])
const MAX_HOPS = 10

export const TRUST_PROXY_TRUE_REFUSED = 'must not be true: with true the leftmost X-Forwarded-For entry, which the client writes itself, ' +
  'becomes request.ip, so any client picks its own rate-limit key and the address in the audit log. Set the number of proxies in front ' +
  'of the service (TRUST_PROXY=1 behind one nginx or load balancer that appends to X-Forwarded-For or overwrites it) or their ' +
  'addresses/CIDRs (TRUST_PROXY=10.0.0.0/8,127.0.0.1)'

function validEntry (entry: string): boolean {
  if (NAMED_RANGES.has(entry)) return true
  const slash = entry.indexOf('/')
  const address = slash === -1 ? entry : entry.slice(0, slash)
  const family = net.isIP(address)
  if (family === 0) return false
  if (slash === -1) return true
  const bits = entry.slice(slash + 1)
  return /^\d{1,3}$/.test(bits) && Number(bits) >= 1 && Number(bits) <= (family === 4 ? 32 : 128)
}

/**
 * TRUST_PROXY as the environment (or a test's override) gives it, normalised; a string
 * saying what is wrong when it is refused. `true` is refused rather than read as one hop:
 * the one value that meant "believe the client" must not quietly change meaning.
 */
export function parseTrustProxy (raw: unknown): { value: TrustProxy } | { error: string } {
  if (raw === false || raw === undefined) return { value: false }
  if (raw === true) return { error: TRUST_PROXY_TRUE_REFUSED }
  if (typeof raw === 'number') {
    if (!Number.isInteger(raw) || raw < 0 || raw > MAX_HOPS) return { error: `must be a hop count from 0 to ${MAX_HOPS}, got ${raw}` }
    return { value: raw === 0 ? false : raw }
  }
  const text = String(raw).trim()
  const lower = text.toLowerCase()
  if (['false', 'no', 'off', ''].includes(lower)) return { value: false }
  if (['true', 'yes', 'on'].includes(lower)) return { error: TRUST_PROXY_TRUE_REFUSED }
  if (/^\d+$/.test(text)) return parseTrustProxy(Number(text))
  const entries = text.split(',').map(e => e.trim()).filter(Boolean)
  const bad = entries.find(e => !validEntry(e))
  if (bad !== undefined || entries.length === 0) {
    return {
      error: 'must be false, a hop count, or a comma-separated list of IP addresses and CIDRs; ' +
        `${JSON.stringify(bad ?? text)} is none of these`
    }
  }
  return { value: entries.join(',') }
}

/**
 * Fastify's trustProxy option for a parsed TRUST_PROXY. Fastify 5 ignores a bare hop count
 * (it trusts nothing then), so a count becomes a function that trusts the last N hops.
 */
export function trustProxyOption (value: TrustProxy): false | string | ((address: string, hop: number) => boolean) {
  if (value === false) return false
  if (typeof value === 'number') return (_address, hop) => hop < value
  return value
}

/**
 * The client address to use: the hop the trusted proxies name, or the socket's peer when that
 * hop is not an IP address (a client wrote it, or a proxy passed garbage on). Zone ids
 * (`fe80::1%eth0`) mean nothing across a network and are refused too.
 */
export function checkedClientAddress (picked: string | undefined, peer: string | undefined): string | undefined {
  return picked !== undefined && net.isIP(picked) !== 0 && !picked.includes('%') ? picked : peer
}
