import fp from 'fastify-plugin'
import type { PoolClient } from 'pg'
import type { TenantRun } from '../infra/database.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** The tenant the session acts in; null on public and operator routes. */
    tenant: { id: string } | null
    /** Runs `fn` in a transaction with this request's tenant set for row-level security. */
    withTenant: TenantRun
  }
}

/** The tenant context: taken from the session, applied to every tenant query via withTenant. */
export default fp(async (fastify) => {
  fastify.decorateRequest('tenant', null)
  // Fails closed: without a tenant there is no transaction to run in.
  const noTenant = () => Promise.reject(new Error('withTenant called on a request without a tenant'))
  fastify.decorateRequest('withTenant', noTenant as TenantRun)
  fastify.addHook('preParsing', async (request) => {
    const id = request.auth?.tenantId
    if (!id) return
    request.tenant = { id }
    // A closure per request, so services can take request.withTenant as their TenantRun. The
    // first call joins the transaction the auth lookup left open (plugins/auth.ts), if any.
    const held = request.heldTransaction
    // It holds a connection only until the held transaction has been used (or ended).
    request.withTenant = held
      ? Object.defineProperty(
        <T>(fn: (c: PoolClient) => Promise<T>) => held.run(fn) ?? fastify.db.withTenant(id, fn), 'holding', { get: () => !held.ended })
      : (fn) => fastify.db.withTenant(id, fn)
  })
}, { name: 'tenant-context', dependencies: ['db', 'auth'], fastify: '5.x' })
