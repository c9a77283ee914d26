import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { EventsPage, EventsQuery, Verification } from '../audit/index.js'

/** Operator views of the audit chains (docs/audit.md). */
const operatorAudit: FastifyPluginAsyncTypebox = async (fastify) => {
  const views = fastify.services.auditViews
  const operator = { auth: 'operator' as const }

  fastify.get('/api/v1/operator/audit/verify', {
    config: operator,
    schema: {
      tags: ['operator'],
      operationId: 'verifyAllAuditChains',
      summary: 'Verify every tenant\'s audit chain',
      description: 'Walks every chain (the operator chain, then each tenant\'s two) against its stored signed checkpoints.',
      response: { 200: Type.Object({ valid: Type.Boolean(), chains: Type.Array(Verification) }) }
    }
  }, async () => views.verifyAll())

  fastify.get('/api/v1/operator/audit/events', {
    config: operator,
    schema: {
      tags: ['operator'],
      operationId: 'listOperatorAuditEvents',
      summary: 'List the operators\' audit events',
      querystring: EventsQuery,
      response: { 200: EventsPage }
    }
  }, async (request) => views.operatorEvents(request.query))
}

export default operatorAudit
