// CORS_ORIGINS: which browser origins may call the API (docs/api.md, "CORS"). A comma-separated
// list of origins, each exact (`https://app.example.com`, `http://localhost:5173`) or with a
// wildcard for any subdomain (`https://*.example.com`: `https://a.example.com`,
// `https://a.b.example.com`, not `https://example.com`). Scheme and port must match as written.

const ORIGIN = /^(https?):\/\/(\*\.)?([a-z0-9-]+(?:\.[a-z0-9-]+)*)(:\d{1,5})?$/

export type OriginMatcher = (origin: string) => boolean

/** The matcher for a CORS_ORIGINS value, or the reason it is not one. */
export function parseCorsOrigins (raw: string | undefined): { match: OriginMatcher | null } | { error: string } {
  const entries = (raw ?? '').split(',').map(e => e.trim()).filter(Boolean)
  if (entries.length === 0) return { match: null }
  const exact = new Set<string>()
  const suffixes: Array<{ scheme: string, suffix: string, port: string }> = []
  for (const entry of entries) {
    const m = ORIGIN.exec(entry.toLowerCase())
    if (!m || entry.endsWith('/')) {
      return { error: `${JSON.stringify(entry)} is not an origin: write scheme://host[:port] (or scheme://*.domain), with no path` }
    }
    const [, scheme, wildcard, host, port = ''] = m
    if (wildcard) suffixes.push({ scheme: scheme!, suffix: `.${host}`, port })
    else exact.add(`${scheme}://${host}${port}`)
  }
  return {
    match: (origin) => {
      if (exact.has(origin)) return true
      let url: URL
      try {
        url = new URL(origin)
      } catch {
        return false
      }
      // An Origin header is scheme://host[:port] and nothing else (RFC 6454); anything more is no origin.
      if (url.origin !== origin) return false
      const port = url.port ? `:${url.port}` : ''
      return suffixes.some(s => url.protocol === `${s.scheme}:` && port === s.port && url.hostname.endsWith(s.suffix))
    }
  }
}
