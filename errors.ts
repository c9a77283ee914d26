// The one registry of error codes. Every 4xx/5xx on the wire carries one of these codes in
// the RFC 9457 problem+json shape (docs/errors.md); clients switch on `code`, never on `title`.
export const errorCatalog = {
  VALIDATION_FAILED: { status: 400, title: 'Request validation failed' },
  MALFORMED_JSON: { status: 400, title: 'Malformed JSON body' },
  BAD_REQUEST: { status: 400, title: 'Bad request' },
  TENANT_REQUIRED: { status: 400, title: 'Choose a tenant' },
  AUTH_UNAUTHENTICATED: { status: 401, title: 'Authentication required' },
  AUTH_INVALID_CREDENTIALS: { status: 401, title: 'Invalid credentials' },
  AUTH_INVALID_TOKEN: { status: 401, title: 'Invalid or expired token' },
  AUTH_FORBIDDEN: { status: 403, title: 'Forbidden' },
  TENANT_FORBIDDEN: { status: 403, title: 'Not allowed in this tenant' },
  ENTITLEMENT_DENIED: { status: 403, title: 'Feature not included in the current entitlements' },
  NOT_FOUND: { status: 404, title: 'Not found' },
  METHOD_NOT_ALLOWED: { status: 405, title: 'Method not allowed' },
  CONFLICT: { status: 409, title: 'Conflict' },
  PAYLOAD_TOO_LARGE: { status: 413, title: 'Payload too large' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, title: 'Unsupported media type' },
  RATE_LIMITED: { status: 429, title: 'Too many requests' },
  INTERNAL: { status: 500, title: 'Internal server error' },
  SERVICE_UNAVAILABLE: { status: 503, title: 'Service temporarily unavailable' }
} as const satisfies Record<string, { status: number, title: string }>

export type ErrorCode = keyof typeof errorCatalog

export interface Problem {
  type: string
  title: string
  status: number
  code: ErrorCode
  detail: string
  requestId: string
  errors?: Array<{ field: string, message: string }>
}

export const problemType = (code: ErrorCode) => `urn:govula:error:${code.toLowerCase().replace(/_/g, '-')}`

/** The body every error response carries. */
export function problem (code: ErrorCode, detail: string, requestId: string): Problem {
  const { status, title } = errorCatalog[code]
  return { type: problemType(code), title, status, code, detail, requestId }
}

/** A failure meant for the client: its code, status and detail go on the wire as they are. */
export class AppError extends Error {
  readonly status: number
  constructor (
    readonly code: ErrorCode,
    detail?: string,
    readonly extra: { headers?: Record<string, string>, errors?: Problem['errors'] } = {}
  ) {
    super(detail ?? errorCatalog[code].title)
    this.name = 'AppError'
    this.status = errorCatalog[code].status
  }
}

export const notFound = (what = 'resource') => new AppError('NOT_FOUND', `${what} not found`)
export const conflict = (detail: string) => new AppError('CONFLICT', detail)

// SQLSTATEs and driver errors that mean "the database is unavailable right now", as opposed
// to "this request is wrong": they answer 503 with Retry-After instead of 500.
const UNAVAILABLE_SQLSTATES = new Set([
  '57P01', '57P02', '57P03', // admin shutdown, crash shutdown, cannot connect now
  '57014', // statement timeout / query canceled
  '53300', // too many connections
  '08000', '08001', '08003', '08006' // connection exceptions
])
const UNAVAILABLE_ERRNO = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH'])

export function isDatabaseUnavailable (err: unknown): boolean {
  if (!(err instanceof Error)) return false
  const code = (err as { code?: unknown }).code
  if (typeof code === 'string' && (UNAVAILABLE_SQLSTATES.has(code) || UNAVAILABLE_ERRNO.has(code))) return true
  return isQueryTimeout(err) ||
    /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Connection ended unexpectedly/i
      .test(err.message)
}

// A new connection was refused: the server is not listening or not accepting yet (a restart,
// a failover). Unlike one killed backend or a saturated pool, it says the database is down.
const REFUSED = new Set(['ECONNREFUSED', '57P03', 'ENOTFOUND', 'EHOSTUNREACH'])
export function isConnectionRefused (err: unknown): boolean {
  const code = err instanceof Error ? (err as { code?: unknown }).code : undefined
  return typeof code === 'string' && REFUSED.has(code)
}

/**
 * pg's client-side query_timeout fired: no answer came in time. The statement may still be
 * running or its bytes still in flight, so the connection is unusable and must be destroyed.
 */
export function isQueryTimeout (err: unknown): boolean {
  return err instanceof Error && err.message === 'Query read timeout'
}
