import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { TENANT_CHAINS } from '../../services/audit.js'
import { NoNul, PageLimit, strict } from '../schemas.js'

// Schemas shared with routes/operator/audit.ts.
const Hash = Type.String({ pattern: '^[0-9a-f]{64}$' })
export const AuditEvent = Type.Object({
  seq: Type.Integer({ minimum: 1 }),
  occurredAt: Type.String({ format: 'date-time' }),
  actor: Type.Object({
    type: Type.Union([Type.Literal('user'), Type.Literal('operator'), Type.Literal('system')]),
    id: Type.Union([Type.String(), Type.Null()]),
    email: Type.Optional(Type.String())
  }),
  action: Type.String(),
  target: Type.Union([Type.Object({ type: Type.String(), id: Type.String() }), Type.Null()]),
  data: Type.Record(Type.String(), Type.Unknown()),
  prevHash: Hash,
  hash: Hash
})
export const EventsPage = Type.Object({ events: Type.Array(AuditEvent), nextCursor: Type.Union([Type.String(), Type.Null()]) })
export const EventsQuery = Type.Object({
  cursor: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,15}$', description: 'nextCursor of the previous page' })),
  limit: PageLimit(200, 50),
  action: Type.Optional(Type.String({ minLength: 1, maxLength: 200, pattern: NoNul }))
}, strict)
const TenantChain = Type.Union(TENANT_CHAINS.map(c => Type.Literal(c)))
export const Verification = Type.Object({
  chain: Type.String(),
  tenantId: Type.Union([Type.String({ format: 'uuid' }), Type.Null()]),
  valid: Type.Boolean(),
  checked: Type.Integer(),
  firstBrokenSeq: Type.Union([Type.Integer(), Type.Null()]),
  reason: Type.Union([Type.String(), Type.Null()]),
  head: Type.Object({ seq: Type.Integer(), hash: Hash }),
  checkpointsChecked: Type.Integer()
})
const SignedCheckpoint = Type.Object({
  chain: Type.String(),
  tenantId: Type.String({ format: 'uuid' }),
  seq: Type.Integer(),
  hash: Hash,
  issuedAt: Type.String({ format: 'date-time' }),
  keyId: Type.String(),
  body: Type.String({ description: 'the exact signed text: canonical JSON of the claim' }),
  signature: Type.String({ description: 'Ed25519 over the UTF-8 bytes of body, base64url' })
})
const CheckpointInput = Type.Object({ body: Type.String({ maxLength: 2000 }), signature: Type.String({ maxLength: 200 }) })

/** The caller's tenant's audit chains (docs/audit.md). Owners and admins, with audit_export. */
const audit: FastifyPluginAsyncTypebox = async (fastify) => {
  const views = fastify.services.auditViews
  const auditors = { roles: ['owner' as const, 'admin' as const] }
  const preHandler = fastify.requireFeature('audit_export')

  fastify.get('/api/v1/audit', {
    config: auditors,
    preHandler,
    schema: {
      tags: ['audit'],
      operationId: 'listAuditEvents',
      summary: 'List the tenant\'s audit events',
      querystring: EventsQuery,
      response: { 200: EventsPage }
    }
  }, async (request) => views.events(request.withTenant, request.tenant!.id, request.query))

  fastify.get('/api/v1/audit/verify', {
    config: auditors,
    preHandler,
    schema: {
      tags: ['audit'],
      operationId: 'verifyAuditChain',
      summary: 'Verify the tenant\'s audit chain',
      description: 'Walks the chain (audit_log unless ?chain=tenant_operation_log) and holds it to the stored signed checkpoints.',
      querystring: Type.Object({ chain: Type.Optional(TenantChain) }, strict),
      response: { 200: Verification }
    }
  }, async (request) => views.verify(request.withTenant, request.tenant!.id, request.query.chain ?? 'audit_log'))

  // Where a tenant hands back the checkpoints it kept, to learn whether
  // the chains still contain exactly what was signed (a truncated tail, a recomputed chain).
  fastify.post('/api/v1/audit/verify', {
    config: auditors,
    preHandler,
    schema: {
      tags: ['audit'],
      operationId: 'verifyAuditCheckpoint',
      summary: 'Verify a signed audit checkpoint',
      body: Type.Object({ checkpoints: Type.Array(CheckpointInput, { minItems: 1, maxItems: 100 }) }, strict),
      response: { 200: Type.Object({ valid: Type.Boolean(), chains: Type.Array(Verification) }) }
    }
  }, async (request) => views.verifyKept(request.withTenant, request.tenant!.id, request.body.checkpoints))

  fastify.get('/api/v1/audit/checkpoint', {
    config: auditors,
    preHandler,
    schema: {
      tags: ['audit'],
      operationId: 'getAuditCheckpoint',
      summary: 'Get a signed audit checkpoint',
      description: 'Signs the current heads of this tenant\'s chains (or returns the stored checkpoint that already covers them). ' +
        'Keep it: a later POST /api/v1/audit/verify with it exposes a truncated or recomputed chain.',
      response: {
        200: Type.Object({
          algorithm: Type.Literal('Ed25519'),
          keyId: Type.String(),
          publicKey: Type.String({ description: 'raw 32-byte Ed25519 public key, base64url: pin it to check signatures offline' }),
          checkpoints: Type.Array(SignedCheckpoint)
        })
      }
    }
  }, async (request) => views.checkpoint(request.withTenant, request.tenant!.id))
}

export default audit
