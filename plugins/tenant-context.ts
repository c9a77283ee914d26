import fp from 'fastify-plugin'
import type pg from 'pg'

declare module 'fastify' {
  interface FastifyRequest {
    /** The tenant the session acts in; null on public and operator routes. */
    tenant: { id: string } | null
    /** Runs `fn` in a transaction with this request's tenant set for row-level security. */
    withTenant<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T>
  }
}

/** The tenant context: taken from the session, applied to every tenant query via withTenant. */
export default fp(async (fastify) => {
  fastify.decorateRequest('tenant', null)
  fastify.decorateRequest('withTenant', function <T> (this: { tenant: { id: string } | null }, fn: (client: pg.PoolClient) => Promise<T>) {
    // Fails closed: without a tenant there is no transaction to run in.
    if (!this.tenant) return Promise.reject(new Error('withTenant called on a request without a tenant'))
    return fastify.db.withTenant(this.tenant.id, fn)
  })
  fastify.addHook('preParsing', async (request) => {
    if (request.auth?.tenantId) request.tenant = { id: request.auth.tenantId }
  })
}, { name: 'tenant-context', dependencies: ['db', 'auth'], fastify: '5.x' })
