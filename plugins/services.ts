import fp from 'fastify-plugin'
import { createServices, type Services } from '../services/index.js'
import type { AccountService } from '../services/accounts.js'
import type { EntitlementEngine } from '../services/entitlements.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Every service, built once by the composition root (services/index.ts). */
    services: Services
    // The ones plugins and tests reach most, under their own names.
    accounts: AccountService
    entitlements: EntitlementEngine
    /** This process's per-boot token, stamped on every change it broadcasts. */
    originToken: string
  }
}

/** Builds the services (services/index.ts) and decorates the app with them. */
export default fp(async (fastify) => {
  const services = await createServices({
    config: fastify.config, db: fastify.db, audit: fastify.audit, log: fastify.log, slots: fastify.tenantSlots
  })
  fastify.decorate('services', services)
  fastify.decorate('accounts', services.accounts)
  fastify.decorate('entitlements', services.entitlements)
  fastify.decorate('originToken', services.originToken)
}, { name: 'services', dependencies: ['config', 'db', 'audit'], fastify: '5.x' })
