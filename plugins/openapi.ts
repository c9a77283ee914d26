import fp from 'fastify-plugin'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import { errorCatalog } from '../errors.js'

// The shape of every error (errors.ts, docs/errors.md), for the document only: route schemas
// leave error bodies alone, so the error handler's output is never filtered by a serializer.
const problemSchema = {
  type: 'object',
  required: ['type', 'title', 'status', 'code', 'detail', 'requestId'],
  properties: {
    type: { type: 'string', description: 'urn:govula:error:<code>' },
    title: { type: 'string' },
    status: { type: 'integer' },
    code: { type: 'string', enum: Object.keys(errorCatalog) },
    detail: { type: 'string' },
    requestId: { type: 'string', description: 'equals the X-Request-Id header' },
    errors: {
      type: 'array',
      description: 'only with VALIDATION_FAILED',
      items: { type: 'object', required: ['field', 'message'], properties: { field: { type: 'string' }, message: { type: 'string' } } }
    }
  }
}
const problemResponse = (description: string) => ({
  description, content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } }
})
const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options']

// Response headers, named once. The rate-limit fields follow draft-ietf-httpapi-ratelimit-headers
// (plugins/rate-limit.ts); every route sends them but the probes.
const headerRef = (name: string) => ({ $ref: `#/components/headers/${name}` })
const HEADERS = {
  XRequestId: {
    description: 'the request\'s id (given by the caller in X-Request-Id, else generated)', required: true, schema: { type: 'string' }
  },
  RateLimit: {
    description: 'the quota left under each policy that applied: "<policy>";r=<remaining>;t=<seconds>', schema: { type: 'string' }
  },
  RateLimitPolicy: { description: 'each policy that applied: "<policy>";q=<limit>;w=<window seconds>', schema: { type: 'string' } },
  RetryAfter: { description: 'seconds to wait before retrying (with 429 and 503)', schema: { type: 'integer', minimum: 0 } }
}
const REASONS: Record<string, string> = { 200: 'OK', 201: 'Created', 202: 'Accepted', 204: 'No Content' }

type Operation = { operationId?: string, responses?: Record<string, { description?: string, headers?: Record<string, unknown> }> }

/** `get /api/v1/tenant/members/:userId` gives getTenantMembersByUserId: a stable fallback for a route that names none. */
function derivedOperationId (method: string, url: string): string {
  const words = url.replace(/^\/api\/(v\d+\/)?/, '/').split(/[/.-]/).filter(Boolean)
    .map(w => w.startsWith(':') ? `By${w.slice(1)}` : w)
  return [method.toLowerCase(), ...words].map((w, i) => i === 0 ? w : w[0]!.toUpperCase() + w.slice(1)).join('')
}

// Swagger UI loads its scripts, styles and images from /docs itself and fetches /docs/json;
// nothing inline runs but one <style> element its bundle injects, allowed by its hash (after an
// upgrade of @fastify/swagger-ui, the /docs test in test/security-edge.test.ts names the new
// hash if it changed). Framing stays forbidden.
const DOCS_CSP = {
  defaultSrc: ["'none'"],
  scriptSrc: ["'self'"],
  styleSrc: ["'self'", "'sha256-RL3ie0nH+Lzz2YNqQN83mnU0J1ot4QL7b99vMdIX99w='"],
  imgSrc: ["'self'", 'data:'],
  fontSrc: ["'self'", 'data:'],
  connectSrc: ["'self'"],
  baseUri: ["'none'"],
  formAction: ["'none'"],
  frameAncestors: ["'none'"]
}

/**
 * The OpenAPI 3 document, generated from the route schemas (registered before the routes, as
 * @fastify/swagger collects them when they are declared): JSON at /docs/json, UI at /docs.
 */
export default fp(async (fastify) => {
  // The operations that send no rate-limit headers (the probes), by operationId.
  const unlimited = new Set<string>()
  await fastify.register(swagger, {
    openapi: {
      openapi: '3.1.0', // 3.1: TypeBox emits JSON Schema (type 'null', type lists), which 3.0 lacks
      info: {
        title: 'Govula core',
        version: '1.0.0',
        description: 'The REST contract of Govula core, written out with its conventions in docs/api.md. ' +
          'Errors are RFC 9457 problem+json (docs/errors.md).',
        // package.json is private and names no licence: nothing is granted (an SPDX LicenseRef, as no SPDX id means that).
        license: { name: 'Proprietary', identifier: 'LicenseRef-Proprietary' }
      },
      servers: [{ url: '/', description: 'the origin serving this document' }],
      components: {
        securitySchemes: {
          bearer: { type: 'http', scheme: 'bearer', description: 'an access token from signup, login or refresh (docs/auth.md)' },
          cronSecret: { type: 'http', scheme: 'bearer', description: 'the CRON_SECRET of the external scheduler' }
        }
      },
      security: [{ bearer: [] }]
    },
    // Shared schemas (fastify.addSchema, an `$id`) are named components by their $id, not def-N.
    refResolver: {
      buildLocalReference (json, _baseUri, _fragment, i) { return typeof json.$id === 'string' ? json.$id : `def-${i}` }
    },
    // Every operation can answer an error (validation, auth, limits, an unavailable database).
    transformObject (document) {
      if (!('openapiObject' in document)) return document.swaggerObject
      // Typed loosely: the document's own types do not admit a plain JSON Schema literal.
      const doc = document.openapiObject as {
        paths?: Record<string, Record<string, Operation>>,
        components?: { schemas?: Record<string, unknown>, headers?: Record<string, unknown> }
      }
      doc.components = { ...doc.components, schemas: { ...doc.components?.schemas, Problem: problemSchema }, headers: HEADERS }
      for (const item of Object.values(doc.paths ?? {})) {
        for (const method of METHODS) {
          const op = item[method]
          if (!op) continue
          op.responses = {
            ...op.responses,
            '4XX': { ...problemResponse('A client error, as problem+json'), headers: { 'Retry-After': headerRef('RetryAfter') } },
            '5XX': {
              ...problemResponse('A server error, as problem+json (503 with Retry-After when the database is unavailable)'),
              headers: { 'Retry-After': headerRef('RetryAfter') }
            }
          }
          const limited = !unlimited.has(op.operationId!)
          for (const [status, response] of Object.entries(op.responses)) {
            if (response.description === 'Default Response' && REASONS[status]) response.description = REASONS[status]
            response.headers = {
              ...response.headers,
              'X-Request-Id': headerRef('XRequestId'),
              ...(limited && { RateLimit: headerRef('RateLimit'), 'RateLimit-Policy': headerRef('RateLimitPolicy') })
            }
          }
        }
      }
      return document.openapiObject
    }
  })
  // Security from the route's config.auth, in one place: public routes need no token, the others a
  // session's (a route with its own scheme, the cron mount, says so). An operationId the route
  // does not give is derived from its method and path.
  fastify.addHook('onRoute', (route) => {
    const schema = route.schema
    if (!schema || schema.hide || route.method === 'HEAD') return
    schema.security ??= route.config?.auth === false ? [] : [{ bearer: [] }]
    schema.operationId ??= derivedOperationId(String(route.method), route.url)
    if (route.config?.rateLimit === false) unlimited.add(schema.operationId)
  })
  // The documentation is public and the one HTML page served; its routes are declared by the
  // UI plugin, so mark them here (plugins/security-headers.ts reads the CSP from the config).
  fastify.addHook('onRoute', (route) => {
    if (route.url === '/docs' || route.url.startsWith('/docs/')) {
      route.config = { ...route.config, auth: false, contentSecurityPolicy: DOCS_CSP } as typeof route.config
    }
  })
  await fastify.register(swaggerUi, { routePrefix: '/docs', uiConfig: { docExpansion: 'list' } })
}, { name: 'openapi', dependencies: ['config'], fastify: '5.x' })
