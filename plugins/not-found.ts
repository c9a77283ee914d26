import fp from 'fastify-plugin'

/** The 404 answer, as problem+json, behind the per-IP limit: 404 floods count too. */
export default fp(async (fastify) => {
  fastify.setNotFoundHandler({ preHandler: fastify.rateLimit() }, (request, reply) =>
    reply.problem('NOT_FOUND', `no route for ${request.method} ${request.url.split('?')[0]}`))
}, { name: 'not-found', dependencies: ['error-handler', 'rate-limit'], fastify: '5.x' })
