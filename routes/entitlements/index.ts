import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { FEATURES, LIFECYCLES } from '../../services/entitlements.js'
import { strict } from '../schemas.js'

export const Feature = Type.Union(FEATURES.map(f => Type.Literal(f)))
export const Lifecycle = Type.Union(LIFECYCLES.map(l => Type.Literal(l)))
const Decision = Type.Object({
  allowed: Type.Boolean(),
  limit: Type.Union([Type.Integer(), Type.Null()]),
  source: Type.Union([Type.Literal('plan'), Type.Literal('contract'), Type.Literal('lifecycle')]),
  reason: Type.String()
})
const Check = Type.Composite([Type.Object({ feature: Feature }), Decision])

/** The caller's tenant's entitlements (docs/entitlements.md). */
const entitlements: FastifyPluginAsyncTypebox = async (fastify) => {
  const engine = fastify.entitlements

  fastify.get('/api/v1/entitlements', {
    schema: {
      tags: ['entitlements'],
      operationId: 'getEntitlements',
      summary: 'Get the tenant\'s entitlements',
      response: { 200: Type.Object({ plan: Type.String(), lifecycle: Lifecycle, features: Type.Record(Type.String(), Decision) }) }
    }
  }, async (request) => (await engine.snapshot(request.tenant!.id, request.withTenant))!)

  fastify.get('/api/v1/entitlements/check', {
    schema: {
      tags: ['entitlements'],
      operationId: 'checkEntitlement',
      summary: 'Check one feature',
      querystring: Type.Object({ feature: Feature }, strict),
      response: { 200: Check }
    }
  }, async (request) => ({
    feature: request.query.feature, ...await engine.check(request.tenant!.id, request.query.feature, request.withTenant)
  }))

  // A POST for its body only: it changes nothing, so it goes on in every lifecycle.
  fastify.post('/api/v1/entitlements/check', {
    config: { lifecycle: 'read' },
    schema: {
      tags: ['entitlements'],
      operationId: 'checkEntitlements',
      summary: 'Check several features',
      body: Type.Object({ features: Type.Array(Feature, { minItems: 1, maxItems: FEATURES.length, uniqueItems: true }) }, strict),
      response: { 200: Type.Object({ results: Type.Array(Check) }) }
    }
  }, async (request) => ({
    results: await Promise.all(request.body.features.map(async feature => ({
      feature, ...await engine.check(request.tenant!.id, feature, request.withTenant)
    })))
  }))
}

export default entitlements
