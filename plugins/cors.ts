import fp from 'fastify-plugin'
import fastifyCors from '@fastify/cors'
import { parseCorsOrigins } from '../infra/cors-origins.js'

// What a browser client of another origin needs: the methods and request headers the API
// uses, and the response headers it must read (limits, retry, request ids, the recorder's ETag).
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']
const REQUEST_HEADERS = ['authorization', 'content-type', 'x-request-id', 'if-none-match']
const EXPOSED = ['ratelimit', 'ratelimit-policy', 'retry-after', 'x-request-id', 'etag',
  'x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset', 'www-authenticate']

/**
 * CORS for the origins of CORS_ORIGINS (infra/cors-origins.ts); none by default, and then
 * nothing is registered at all. Tokens travel in Authorization, never in cookies, so no
 * credentials mode. Preflights (OPTIONS) are answered 204 before authentication.
 */
export default fp(async (fastify) => {
  const parsed = parseCorsOrigins(fastify.config.CORS_ORIGINS)
  // config.ts has refused a malformed value already.
  if ('error' in parsed || !parsed.match) return
  const allowed = parsed.match
  // A preflight is answered in @fastify/cors's onRequest hook, before authentication and the
  // limits; its catch-all OPTIONS route only sees the ones refused, which get a plain 404.
  fastify.addHook('onRoute', (route) => {
    if (route.method === 'OPTIONS' && route.url === '*') route.config = { ...route.config, auth: false }
  })
  await fastify.register(fastifyCors, {
    origin: (origin, cb) => cb(null, origin !== undefined && allowed(origin)),
    methods: METHODS,
    allowedHeaders: REQUEST_HEADERS,
    exposedHeaders: EXPOSED,
    credentials: false,
    maxAge: 600,
    strictPreflight: true
  })
}, { name: 'cors', dependencies: ['config'], fastify: '5.x' })
