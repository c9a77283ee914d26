import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import type { Config } from '../../config.js'
import { AppError } from '../../errors.js'
import { headsFrom, listEvents, TENANT_CHAINS, verifyChain, type ChainVerification, type HeadSource } from '../../services/audit.js'
import { CheckpointError, createCheckpoints, storedCheckpoints, trustedHeads } from '../../services/audit-checkpoints.js'
import { resolveAuditSigner, type AuditSigner } from '../../infra/audit-signer.js'
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

/**
 * The checkpoint signer for routes: an explicit one (tests), else AUDIT_SIGNING_KEY, else the
 * public development key outside production. Null: checkpoints are not available.
 */
export function routeSigner (config: Config, given: AuditSigner | null | undefined): AuditSigner | null {
  if (given !== undefined) return given
  return resolveAuditSigner(config.AUDIT_SIGNING_KEY, config.NODE_ENV)
}

export interface AuditRouteOptions {
  /** Overrides AUDIT_SIGNING_KEY; null turns checkpoints off. */
  signer?: AuditSigner | null
}

/** The caller's tenant's audit chains (docs/audit.md). Owners and admins, with audit_export. */
const audit: FastifyPluginAsyncTypebox<AuditRouteOptions> = async (fastify, opts) => {
  const signer = routeSigner(fastify.config, opts.signer)
  const auditors = { roles: ['owner' as const, 'admin' as const] }
  const preHandler = fastify.requireFeature('audit_export')

  const verify = async (client: Parameters<typeof verifyChain>[0], chain: typeof TENANT_CHAINS[number], tenantId: string, extra: HeadSource[] = []): Promise<ChainVerification> =>
    verifyChain(client, chain, tenantId, { checkpoints: [...signer ? [storedCheckpoints(client, signer, chain, tenantId)] : [], ...extra] })

  fastify.get('/api/v1/audit', {
    config: auditors,
    preHandler,
    schema: { tags: ['audit'], querystring: EventsQuery, response: { 200: EventsPage } }
  }, async (request) => {
    const tenantId = request.tenant!.id
    const { cursor, limit, action } = request.query
    return request.withTenant(c => listEvents(c, 'audit_log', tenantId, { cursor: cursor ? Number(cursor) : null, limit, action }))
  })

  fastify.get('/api/v1/audit/verify', {
    config: auditors,
    preHandler,
    schema: {
      tags: ['audit'],
      description: 'Walks the chain (audit_log unless ?chain=tenant_operation_log) and holds it to the stored signed checkpoints.',
      querystring: Type.Object({ chain: Type.Optional(TenantChain) }, strict),
      response: { 200: Verification }
    }
  }, async (request) => {
    const tenantId = request.tenant!.id
    return request.withTenant(c => verify(c, request.query.chain ?? 'audit_log', tenantId))
  })

  // Where a tenant hands back the checkpoints it kept, to learn whether
  // the chains still contain exactly what was signed (a truncated tail, a recomputed chain).
  fastify.post('/api/v1/audit/verify', {
    config: auditors,
    preHandler,
    schema: {
      tags: ['audit'],
      body: Type.Object({ checkpoints: Type.Array(CheckpointInput, { minItems: 1, maxItems: 100 }) }, strict),
      response: { 200: Type.Object({ valid: Type.Boolean(), chains: Type.Array(Verification) }) }
    }
  }, async (request) => {
    if (!signer) throw new AppError('SERVICE_UNAVAILABLE', 'audit checkpoints are not configured on this server (AUDIT_SIGNING_KEY)')
    const tenantId = request.tenant!.id
    let heads
    try {
      heads = trustedHeads(signer, tenantId, request.body.checkpoints)
    } catch (err) {
      if (err instanceof CheckpointError) throw new AppError('BAD_REQUEST', err.message)
      throw err
    }
    const chains = await request.withTenant(async c => {
      const out: ChainVerification[] = []
      for (const chain of TENANT_CHAINS) out.push(await verify(c, chain, tenantId, [headsFrom(heads.get(chain) ?? [])]))
      return out
    })
    return { valid: chains.every(v => v.valid), chains }
  })

  fastify.get('/api/v1/audit/checkpoint', {
    config: auditors,
    preHandler,
    schema: {
      tags: ['audit'],
      description: 'Signs the current heads of this tenant\'s chains (or returns the stored checkpoint that already covers them). Keep it: a later POST /api/v1/audit/verify with it exposes a truncated or recomputed chain.',
      response: {
        200: Type.Object({
          algorithm: Type.Literal('Ed25519'),
          keyId: Type.String(),
          publicKey: Type.String({ description: 'raw 32-byte Ed25519 public key, base64url: pin it to check signatures offline' }),
          checkpoints: Type.Array(SignedCheckpoint)
        })
      }
    }
  }, async (request) => {
    if (!signer) throw new AppError('SERVICE_UNAVAILABLE', 'audit checkpoints are not configured on this server (AUDIT_SIGNING_KEY)')
    const tenantId = request.tenant!.id
    const checkpoints = await request.withTenant(c => createCheckpoints(c, signer, tenantId))
    return { algorithm: signer.algorithm, keyId: signer.keyId, publicKey: signer.publicKey, checkpoints: checkpoints.map(cp => ({ ...cp, tenantId })) }
  })
}

export default audit
