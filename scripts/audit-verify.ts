// `npm run audit:verify [-- --verbose] [-- --batch-size N]`: verifies every audit chain in the
// database (hashes, links, gapless seq, and the stored signed checkpoints), streaming each in
// bounded batches. Exits 0 when all hold, 1 naming each broken chain and its first bad seq,
// 2 when it could not run. Connects as MIGRATION_DATABASE_URL (or DATABASE_URL).
import { parseArgs } from 'node:util'
import pg from 'pg'
import { ConfigError, loadConfig } from '../config.js'
import { allChains, DEFAULT_VERIFY_BATCH, verifyChain, type HeadSource } from '../services/audit.js'
import { storedCheckpoints } from '../services/audit-checkpoints.js'
import { resolveAuditSigner } from '../infra/audit-signer.js'

const { values: args } = parseArgs({
  options: { verbose: { type: 'boolean', short: 'v', default: false }, 'batch-size': { type: 'string' } }
})
const batchSize = args['batch-size'] === undefined ? DEFAULT_VERIFY_BATCH : Number(args['batch-size'])

let client: pg.Client | undefined
try {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new ConfigError('--batch-size', 'must be a positive integer')
  const config = loadConfig(process.env)
  const url = config.MIGRATION_DATABASE_URL ?? config.DATABASE_URL
  if (!url) throw new ConfigError('MIGRATION_DATABASE_URL', 'or DATABASE_URL must be set')
  const signer = resolveAuditSigner(config)
  if (!signer) console.warn('AUDIT_SIGNING_KEY is not set: checking hashes only, not the signed checkpoints')

  client = new pg.Client({ connectionString: url, application_name: 'govula-audit-verify' })
  await client.connect()
  // Session-wide on this private connection: the operator context reads every chain
  // (row-level security is forced even on the owner role, which alone may sign a context here).
  // A day: the verify of a large database outlasts the five minutes a request's context lasts.
  await client.query("SELECT set_config('app.context', app_context_sign(NULL, NULL, true, 86400), false)")

  const started = Date.now()
  let chains = 0
  let rows = 0
  const broken: string[] = []
  for await (const { chain, tenantId } of allChains(client)) {
    const checkpoints: HeadSource[] = signer ? [storedCheckpoints(client, signer, chain, tenantId)] : []
    const v = await verifyChain(client, chain, tenantId, { batchSize, checkpoints })
    chains++
    rows += v.checked
    const name = tenantId ? `${chain} (tenant ${tenantId})` : chain
    if (!v.valid) {
      broken.push(name)
      console.error(`BROKEN ${name} at seq ${v.firstBrokenSeq}: ${v.reason}`)
    } else if (args.verbose) {
      console.log(`ok     ${name}: ${v.checked} rows, head seq ${v.head.seq}, ${v.checkpointsChecked} checkpoints`)
    }
  }
  const summary = `${chains} chains, ${rows} rows verified in ${((Date.now() - started) / 1000).toFixed(1)} s`
  if (broken.length) {
    console.error(`audit verification FAILED: ${broken.length} of ${summary}`)
    process.exitCode = 1
  } else {
    console.log(`audit verification passed: ${summary}`)
  }
} catch (err) {
  console.error(err instanceof ConfigError ? err.message : `audit verification could not run: ${(err as Error).message}`)
  process.exitCode = 2
} finally {
  await client?.end().catch(() => {})
}
