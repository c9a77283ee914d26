import fp from 'fastify-plugin'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'

/**
 * The OpenAPI 3 document, generated from the route schemas (registered before the routes, as
 * @fastify/swagger collects them when they are declared): JSON at /docs/json, UI at /docs.
 */
export default fp(async (fastify) => {
  await fastify.register(swagger, {
    openapi: {
      openapi: '3.1.0', // 3.1: TypeBox emits JSON Schema (type 'null', type lists), which 3.0 lacks
      info: { title: 'Govula core', version: '1.0.0', description: 'The REST contract of API.md. Errors are RFC 9457 problem+json.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }]
    }
  })
  // The documentation is public; its routes are declared by the UI plugin, so mark them here.
  fastify.addHook('onRoute', (route) => {
    if (route.url === '/docs' || route.url.startsWith('/docs/')) route.config = { ...route.config, auth: false }
  })
  await fastify.register(swaggerUi, { routePrefix: '/docs', uiConfig: { docExpansion: 'list' } })
}, { name: 'openapi', dependencies: ['config'], fastify: '5.x' })
