import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { after, test } from 'node:test'
import pg from 'pg'
import { appendAudit, verifyChain } from '../services/audit.js'
import { createCheckpoints, storedCheckpoints } from '../services/audit-checkpoints.js'
import { createAuditSigner } from '../infra/audit-signer.js'
import { createTestDatabase, runtimeDatabase } from './support/app.js'

const db = await createTestDatabase()
const pool = new pg.Pool({ connectionString: db.runtimeUrl, max: 3 })
pool.on('error', () => {}) // the database is dropped WITH (FORCE) when the file ends
after(() => pool.end())
const app = await runtimeDatabase(db, pool)
const ROWS = 50_000
const tenant = randomUUID()
const signingKey = 'yU7kQ0m3X1b9pZ2cV8nR4tW6eA5sD0fG1hJ3kL7qP9o='
const signer = createAuditSigner(signingKey)

// Through audit_append, 5,000 rows per statement and transaction: the real write path
// without 50,000 round trips.
const started = Date.now()
for (let from = 1; from <= ROWS; from += 5000) {
  await app.withTenant(tenant, c => c.query(
    `SELECT count(audit_append('audit_log', $1,
       '{"action":"bulk","actor":{"id":null,"type":"system"},"data":{"i":' || g || ',"pad":"' || repeat('x', 100) || '"},"target":null}'))
       FROM generate_series($2::int, $3::int) g`, [tenant, from, Math.min(from + 4999, ROWS)]))
}
await app.withTenant(tenant, c => createCheckpoints(c, signer, tenant))
console.log(`# seeded ${ROWS} rows in ${Date.now() - started} ms`)

test(`a chain of ${ROWS} rows verifies in batches that never exceed the batch size`, async () => {
  const batches: number[] = []
  const v = await app.withTenant(tenant, c => verifyChain(c, 'audit_log', tenant, {
    batchSize: 1000, onBatch: n => batches.push(n), checkpoints: [storedCheckpoints(c, signer, 'audit_log', tenant)]
  }))
  assert.equal(v.valid, true, v.reason ?? '')
  assert.equal(v.checked, ROWS)
  assert.equal(v.head.seq, ROWS)
  assert.equal(v.checkpointsChecked, 1)
  assert.ok(Math.max(...batches) <= 1000, 'no batch holds more than batchSize rows')
  assert.equal(batches.length, ROWS / 1000 + 1, 'one batch per 1000 rows, then an empty one ends the walk')
  assert.equal(batches.reduce((a, b) => a + b, 0), ROWS)
})

function auditVerify (...args: string[]) {
  return spawnSync(process.execPath, ['--import', 'tsx', 'scripts/audit-verify.ts', ...args], {
    encoding: 'utf8',
    env: {
      ...process.env,
      NODE_ENV: 'test',
      DATABASE_URL: db.runtimeUrl,
      MIGRATION_DATABASE_URL: db.ownerUrl,
      AUDIT_SIGNING_KEY: signingKey
    },
    timeout: 120_000
  })
}

test('npm run audit:verify passes on intact chains and names the chain and first bad seq of a broken one', async () => {
  await app.withTransaction(async c => {
    await app.setContext(c, { operator: true })
    await appendAudit(c, 'operator_audit_events', null, { actor: { type: 'operator', id: randomUUID() }, action: 'operator.login' })
  })
  const ok = auditVerify('--verbose')
  assert.equal(ok.status, 0, ok.stdout + ok.stderr)
  assert.match(ok.stdout, new RegExp(`ok +audit_log \\(tenant ${tenant}\\): ${ROWS} rows`))
  assert.match(ok.stdout, /audit verification passed: 3 chains, 50001 rows/)

  const admin = new pg.Client({ connectionString: db.adminUrl })
  admin.on('error', () => {})
  await admin.connect()
  await admin.query('ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only')
  await admin.query('UPDATE audit_log SET data = jsonb_set(data, \'{pad}\', \'"y"\') WHERE tenant_id = $1 AND seq = $2', [tenant, ROWS - 1])
  await admin.end()
  const bad = auditVerify()
  assert.equal(bad.status, 1, bad.stdout + bad.stderr)
  assert.match(bad.stderr, new RegExp(`BROKEN audit_log \\(tenant ${tenant}\\) at seq ${ROWS - 1}: hash does not match`))
  assert.match(bad.stderr, /FAILED: 1 of 3 chains/)
})
