import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { allChains, listEvents, verifyChain, type ChainVerification } from '../../services/audit.js'
import { storedCheckpoints } from '../../services/audit-checkpoints.js'
import { EventsPage, EventsQuery, routeSigner, Verification, type AuditRouteOptions } from '../audit/index.js'

/** Operator views of the audit chains (docs/audit.md). */
const operatorAudit: FastifyPluginAsyncTypebox<AuditRouteOptions> = async (fastify, opts) => {
  const signer = routeSigner(fastify.config, opts.signer)
  const operator = { auth: 'operator' as const }
  // The operator context reads every chain (row-level security, db/migrations/0003_audit.sql).
  const asOperator = fastify.db.withOperator

  fastify.get('/api/v1/operator/audit/verify', {
    config: operator,
    schema: {
      tags: ['operator'],
      description: 'Walks every chain (the operator chain, then each tenant\'s two) against its stored signed checkpoints.',
      response: { 200: Type.Object({ valid: Type.Boolean(), chains: Type.Array(Verification) }) }
    }
  }, async () => {
    const chains = await asOperator(async (client) => {
      const out: ChainVerification[] = []
      for await (const { chain, tenantId } of allChains(client)) {
        out.push(await verifyChain(client, chain, tenantId, { checkpoints: signer ? [storedCheckpoints(client, signer, chain, tenantId)] : [] }))
      }
      return out
    })
    return { valid: chains.every(c => c.valid), chains }
  })

  fastify.get('/api/v1/operator/audit/events', {
    config: operator,
    schema: { tags: ['operator'], querystring: EventsQuery, response: { 200: EventsPage } }
  }, async (request) => {
    const { cursor, limit, action } = request.query
    return asOperator(client => listEvents(client, 'operator_audit_events', null, { cursor: cursor ? Number(cursor) : null, limit, action }))
  })
}

export default operatorAudit
