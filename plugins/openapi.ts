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
  await fastify.register(swagger, {
    openapi: {
      openapi: '3.1.0', // 3.1: TypeBox emits JSON Schema (type 'null', type lists), which 3.0 lacks
      info: {
        title: 'Govula core',
        version: '1.0.0',
        description: 'The REST contract of Govula core. Errors are RFC 9457 problem+json (docs/errors.md).'
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }]
    },
    // Every operation can answer an error (validation, auth, limits, an unavailable database).
    transformObject (document) {
      if (!('openapiObject' in document)) return document.swaggerObject
      // Typed loosely: the document's own types do not admit a plain JSON Schema literal.
      const doc = document.openapiObject as {
        paths?: Record<string, Record<string, { responses?: Record<string, unknown> }>>, components?: { schemas?: Record<string, unknown> }
      }
      doc.components = { ...doc.components, schemas: { ...doc.components?.schemas, Problem: problemSchema } }
      for (const item of Object.values(doc.paths ?? {})) {
        for (const method of METHODS) {
          const op = item[method]
          if (!op) continue
          op.responses = {
            ...op.responses,
            '4XX': problemResponse('A client error, as problem+json'),
            '5XX': problemResponse('A server error, as problem+json (503 with Retry-After when the database is unavailable)')
          }
        }
      }
      return document.openapiObject
    }
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
