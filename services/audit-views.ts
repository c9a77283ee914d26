import { AppError } from '../errors.js'
import type { AuditSigner } from '../infra/audit-signer.js'
import type { Database, TenantRun } from '../infra/database.js'
import { allChains, headsFrom, listEvents, TENANT_CHAINS, verifyChain, type ChainVerification, type HeadSource } from './audit.js'
import { CheckpointError, createCheckpoints, storedCheckpoints, trustedHeads } from './audit-checkpoints.js'

type TenantChain = typeof TENANT_CHAINS[number]
interface Page { cursor?: string, limit: number, action?: string }

const unavailable = () => new AppError('SERVICE_UNAVAILABLE', 'audit checkpoints are not configured on this server (AUDIT_SIGNING_KEY)')
const pageOf = ({ cursor, limit, action }: Page) => ({ cursor: cursor ? Number(cursor) : null, limit, action })

/**
 * What the audit routes answer (docs/audit.md): pages of a chain, its verification against the
 * stored signed checkpoints and those a tenant hands back, and new checkpoints. A tenant's reads
 * take the request's TenantRun; the operator's run in operator scope.
 */
export function createAuditViews ({ db, signer }: { db: Database, signer: AuditSigner | null }) {
  type Client = Parameters<typeof verifyChain>[0]
  const verify = (client: Client, chain: Parameters<typeof verifyChain>[1], tenantId: string | null, extra: HeadSource[] = []) =>
    verifyChain(client, chain, tenantId, { checkpoints: [...signer ? [storedCheckpoints(client, signer, chain, tenantId)] : [], ...extra] })

  return {
    events: (run: TenantRun, tenantId: string, page: Page) => run(c => listEvents(c, 'audit_log', tenantId, pageOf(page))),

    verify: (run: TenantRun, tenantId: string, chain: TenantChain): Promise<ChainVerification> => run(c => verify(c, chain, tenantId)),

    /** Both chains held to the checkpoints a tenant kept: a truncated tail or a recomputed chain shows. */
    async verifyKept (run: TenantRun, tenantId: string, kept: Array<{ body: string, signature: string }>) {
      if (!signer) throw unavailable()
      let heads
      try {
        heads = trustedHeads(signer, tenantId, kept)
      } catch (err) {
        if (err instanceof CheckpointError) throw new AppError('BAD_REQUEST', err.message)
        throw err
      }
      const chains = await run(async c => {
        const out: ChainVerification[] = []
        for (const chain of TENANT_CHAINS) out.push(await verify(c, chain, tenantId, [headsFrom(heads.get(chain) ?? [])]))
        return out
      })
      return { valid: chains.every(v => v.valid), chains }
    },

    async checkpoint (run: TenantRun, tenantId: string) {
      if (!signer) throw unavailable()
      const checkpoints = await run(c => createCheckpoints(c, signer, tenantId))
      return {
        algorithm: signer.algorithm,
        keyId: signer.keyId,
        publicKey: signer.publicKey,
        checkpoints: checkpoints.map(cp => ({ ...cp, tenantId }))
      }
    },

    /** Every chain: the operator's, then each tenant's two. */
    async verifyAll () {
      const chains = await db.withOperator(async (client) => {
        const out: ChainVerification[] = []
        for await (const { chain, tenantId } of allChains(client)) out.push(await verify(client, chain, tenantId))
        return out
      })
      return { valid: chains.every(c => c.valid), chains }
    },

    operatorEvents: (page: Page) => db.withOperator(c => listEvents(c, 'operator_audit_events', null, pageOf(page)))
  }
}

export type AuditViews = ReturnType<typeof createAuditViews>
