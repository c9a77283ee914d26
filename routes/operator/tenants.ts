import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { Lifecycle } from '../entitlements/index.js'
import { DateTime, NoContent, PageLimit, strict, Uuid } from '../schemas.js'

const Plan = Type.Union([Type.Literal('free'), Type.Literal('pro'), Type.Literal('enterprise')])
const Tenant = Type.Object({ id: Uuid, name: Type.String(), slug: Type.String(), plan: Type.String(), lifecycle: Lifecycle })
// One schema with a type list, not a union: Ajv coerces types, and in an anyOf the first
// branch wins by coercion (null became 0 when integer came first; 0 became null the other
// way round). With a type list a value that already has one of the types is left alone.
const Limit = Type.Unsafe<number | null>({ type: ['integer', 'null'], minimum: 0 })
const ContractFeatures = Type.Object({
  recording_mode: Type.Optional(Type.Boolean()),
  audit_export: Type.Optional(Type.Boolean()),
  seats: Type.Optional(Limit),
  api_requests_per_minute: Type.Optional(Limit),
  recording_events_per_minute: Type.Optional(Limit),
  recording_retention_days: Type.Optional(Limit)
}, { ...strict, minProperties: 1 })
const Contract = Type.Object({ tenantId: Uuid, features: ContractFeatures, startsAt: DateTime, endsAt: DateTime })
const Params = Type.Object({ id: Type.String({ maxLength: 64 }) })

/** Operator administration of tenants: plan, contract, lifecycle (docs/entitlements.md). */
const operatorTenants: FastifyPluginAsyncTypebox = async (fastify) => {
  const admin = fastify.services.tenantAdmin
  const operator = { auth: 'operator' as const }

  fastify.get('/api/v1/operator/tenants', {
    config: operator,
    schema: {
      tags: ['operator'],
      operationId: 'listTenants',
      summary: 'List tenants',
      querystring: Type.Object({ cursor: Type.Optional(Type.String({ maxLength: 64 })), limit: PageLimit(200, 50) }, strict),
      response: { 200: Type.Object({ tenants: Type.Array(Tenant), nextCursor: Type.Union([Type.String(), Type.Null()]) }) }
    }
  }, async (request) => admin.list(request.query.cursor, request.query.limit))

  fastify.put('/api/v1/operator/tenants/:id/plan', {
    config: operator,
    schema: {
      tags: ['operator'],
      operationId: 'setTenantPlan',
      summary: 'Set a tenant\'s plan',
      params: Params,
      body: Type.Object({ plan: Plan }, strict),
      response: { 200: Tenant }
    }
  }, async (request) => admin.setPlan(request.auth!, request.params.id, request.body.plan))

  fastify.put('/api/v1/operator/tenants/:id/contract', {
    config: operator,
    schema: {
      tags: ['operator'],
      operationId: 'setTenantContract',
      summary: 'Set a tenant\'s contract overrides',
      params: Params,
      body: Type.Object({
        features: ContractFeatures, startsAt: Type.String({ format: 'date-time' }), endsAt: Type.String({ format: 'date-time' })
      }, strict),
      response: { 200: Contract }
    }
  }, async (request) => admin.putContract(request.auth!, request.params.id, request.body))

  fastify.delete('/api/v1/operator/tenants/:id/contract', {
    config: operator,
    schema: {
      tags: ['operator'],
      operationId: 'deleteTenantContract',
      summary: 'Remove a tenant\'s contract overrides',
      params: Params,
      response: { 204: NoContent }
    }
  }, async (request, reply) => {
    await admin.deleteContract(request.auth!, request.params.id)
    return reply.code(204).send(null)
  })

  fastify.post('/api/v1/operator/tenants/:id/lifecycle', {
    config: operator,
    schema: {
      tags: ['operator'],
      operationId: 'changeTenantLifecycle',
      summary: 'Move a tenant to a lifecycle state',
      params: Params,
      body: Type.Object({ to: Lifecycle }, strict),
      response: { 200: Tenant }
    }
  }, async (request) => admin.transition(request.auth!, request.params.id, request.body.to))
}

export default operatorTenants
