import fp from 'fastify-plugin'
import rateLimit from '@fastify/rate-limit'
import { AppError } from '../errors.js'

/**
 * @fastify/rate-limit, answering 429 in the problem+json shape. It attaches to routes as they
 * are declared, so it is registered before them. Routes opt in through `config.rateLimit`
 * (the auth routes: per IP) or `fastify.rateLimit()` hooks (per account).
 */
export default fp(async (fastify) => {
  await fastify.register(rateLimit, {
    global: false,
    errorResponseBuilder: (_request, context) =>
      new AppError('RATE_LIMITED', `rate limit of ${context.max} requests per ${context.after} exceeded; retry in ${Math.ceil(context.ttl / 1000)} s`)
  })
}, { name: 'rate-limit', dependencies: ['config', 'error-handler'], fastify: '5.x' })
