import fp from 'fastify-plugin'
import helmet, { type HelmetOptions } from 'helmet'

type Middleware = ReturnType<typeof helmet>
type Directives = NonNullable<Exclude<HelmetOptions['contentSecurityPolicy'], boolean | undefined>['directives']>

declare module 'fastify' {
  interface FastifyContextConfig {
    /** A route's own Content-Security-Policy directives (the API's CSP loads nothing). */
    contentSecurityPolicy?: Directives
  }
}

// Headers for a JSON API: no sniffing, no framing, HSTS, and a CSP under which nothing loads
// (a stored payload is never run as a page).
const API: HelmetOptions = {
  contentSecurityPolicy: { useDefaults: false, directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } },
  frameguard: { action: 'deny' }
}

/**
 * helmet's headers on every response. Each middleware is built once (for the API, and for each
 * route that sets its own CSP): @fastify/helmet builds one per request, which re-parses the
 * whole configuration and cost the tenant read some 40 µs of CPU per request.
 */
export default fp(async (fastify) => {
  const api = helmet(API)
  const byRoute = new WeakMap<object, Middleware>()
  const forRoute = (directives: Directives) => {
    let middleware = byRoute.get(directives)
    if (!middleware) {
      middleware = helmet({ ...API, contentSecurityPolicy: { useDefaults: false, directives } })
      byRoute.set(directives, middleware)
    }
    return middleware
  }
  fastify.addHook('onRequest', (request, reply, done) => {
    const own = request.routeOptions.config.contentSecurityPolicy
    const middleware = own ? forRoute(own) : api
    middleware(request.raw, reply.raw, (err?: unknown) => done(err as Error | undefined))
  })
}, { name: 'security-headers', fastify: '5.x' })
