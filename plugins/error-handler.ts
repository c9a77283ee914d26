import fp from 'fastify-plugin'
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import { AppError, errorCatalog, isDatabaseUnavailable, problem, type ErrorCode } from '../errors.js'

declare module 'fastify' {
  interface FastifyReply {
    problem(code: ErrorCode, detail?: string, extra?: AppError['extra']): FastifyReply
  }
}

// Fastify's own client errors, mapped onto the registry.
const FASTIFY_CODES: Record<string, ErrorCode> = {
  FST_ERR_CTP_INVALID_JSON_BODY: 'MALFORMED_JSON',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'MALFORMED_JSON',
  FST_ERR_CTP_BODY_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'BAD_REQUEST',
  FST_ERR_VALIDATION: 'VALIDATION_FAILED'
}

// The generic code for a bare 4xx status from a plugin.
const STATUS_CODES: Record<number, ErrorCode> = {
  400: 'BAD_REQUEST',
  401: 'AUTH_UNAUTHENTICATED',
  403: 'AUTH_FORBIDDEN',
  404: 'NOT_FOUND',
  405: 'METHOD_NOT_ALLOWED',
  409: 'CONFLICT',
  413: 'PAYLOAD_TOO_LARGE',
  415: 'UNSUPPORTED_MEDIA_TYPE',
  429: 'RATE_LIMITED'
}

function fieldOf (context: string | undefined, v: { instancePath: string, params?: Record<string, unknown> }): string {
  const path = v.instancePath.split('/').filter(Boolean)
  const extra = v.params?.missingProperty ?? v.params?.additionalProperty
  if (typeof extra === 'string') path.push(extra)
  return [context ?? 'body', ...path].join('.')
}

function send (request: FastifyRequest, reply: FastifyReply, code: ErrorCode, detail: string, extra: AppError['extra'] = {}) {
  const body = problem(code, detail, request.id)
  if (extra.errors) body.errors = extra.errors
  if (extra.headers) reply.headers(extra.headers)
  // RFC 6750 §3: every 401 names the scheme; error="invalid_token" only when a token was sent
  // and refused (a request without one gets no error code).
  if (body.status === 401) reply.header('www-authenticate', code === 'AUTH_INVALID_TOKEN' ? 'Bearer error="invalid_token"' : 'Bearer')
  return reply.code(body.status).type('application/problem+json').send(body)
}

/** One error shape on the wire: every 4xx/5xx leaves as problem+json with a registry code. */
export default fp(async (fastify) => {
  fastify.decorateReply('problem', function (this: FastifyReply, code: ErrorCode, detail?: string, extra?: AppError['extra']) {
    return send(this.request, this, code, detail ?? errorCatalog[code].title, extra)
  })

  fastify.setErrorHandler((error: FastifyError, request, reply) => {
    if (error instanceof AppError) return send(request, reply, error.code, error.message, error.extra)

    if (error.validation) {
      const errors = error.validation.map(v => ({ field: fieldOf(error.validationContext, v), message: v.message ?? 'is invalid' }))
      return send(request, reply, 'VALIDATION_FAILED', `${errors[0]?.field} ${errors[0]?.message}`, { errors })
    }
    const mapped = error.code ? FASTIFY_CODES[error.code] : undefined
    if (mapped) return send(request, reply, mapped, error.message)

    if (isDatabaseUnavailable(error)) {
      request.log.warn({ err: error }, 'database unavailable')
      return send(request, reply, 'SERVICE_UNAVAILABLE', 'the database is unavailable, retry shortly', { headers: { 'retry-after': '1' } })
    }
    // Any other error a plugin raised with a 4xx status (rate limiter, body parsers…).
    const status = error.statusCode ?? 500
    if (status >= 400 && status < 500) return send(request, reply, STATUS_CODES[status] ?? 'BAD_REQUEST', error.message)
    request.log.error({ err: error }, 'unhandled error')
    return send(request, reply, 'INTERNAL', 'an unexpected error occurred; quote the requestId when reporting it')
  })
}, { name: 'error-handler', fastify: '5.x' })
