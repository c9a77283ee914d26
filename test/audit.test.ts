import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { after, test } from 'node:test'
import pg from 'pg'
import {
  allChains, appendAudit, canonicalJson, chainHead, chainRowHash, GENESIS_HASH, headsFrom, listEvents, verifyChain,
  type AuditChain, type AuditEntry, type ChainRow, type ChainVerification
} from '../services/audit.js'
import { createCheckpoints, openCheckpoint, storedCheckpoints, trustedHeads } from '../services/audit-checkpoints.js'
import { createAuditSigner } from '../infra/audit-signer.js'
import type { Queryable } from '../infra/database.js'
import { rlsViolations } from '../infra/database-checks.js'
import { createTestDatabase, runtimeDatabase, waitFor } from './support/app.js'

const db = await createTestDatabase()
// Two pools on the runtime login: two app instances appending to the same chains.
const poolA = new pg.Pool({ connectionString: db.runtimeUrl, max: 10 })
const poolB = new pg.Pool({ connectionString: db.runtimeUrl, max: 10 })
const app1 = await runtimeDatabase(db, poolA)
const app2 = await runtimeDatabase(db, poolB)
const admin = new pg.Client({ connectionString: db.adminUrl })
await admin.connect()
// The database is dropped WITH (FORCE) when the file ends, possibly under idle connections.
poolA.on('error', () => {})
poolB.on('error', () => {})
admin.on('error', () => {})
after(async () => { await Promise.all([poolA.end(), poolB.end(), admin.end()]) })

const signer = createAuditSigner('4pA1hWlV9s0QmJ7n8dZq2YxK3cB6tR5uE0iO1pL9wVk=')
const otherKey = '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08'
const entry = (i: number, extra: Record<string, unknown> = {}): AuditEntry => ({
  actor: { type: 'user', id: '7d2c1a64-8f0e-4b5a-9c3d-2e1f0a9b8c7d', email: 'alice@a.example' },
  action: 'test.appended',
  target: { type: 'thing', id: String(i) },
  data: { i, ...extra }
})

/** N rows appended through audit_append in one statement (one transaction): the real write path, fast. */
async function seed (tenantId: string, n: number, chain: AuditChain = 'audit_log') {
  await app1.withTenant(tenantId, c => c.query(
    `SELECT count(audit_append($2, $1, '{"action":"seed","actor":{"id":null,"type":"system"},"data":{"i":' || g || '},"target":null}'))
       FROM generate_series(1, $3::int) g`, [tenantId, chain, n]))
}

const verifyAs = (tenantId: string, chain: AuditChain = 'audit_log', opts: Parameters<typeof verifyChain>[3] = {}) =>
  app1.withTenant(tenantId, c => verifyChain(c, chain, tenantId, opts))

/** Runs SQL as the superuser with the append-only trigger switched off, as an attacker with full access would. */
async function tamper (table: string, sql: string, params: unknown[]) {
  await admin.query('BEGIN')
  try {
    await admin.query(`ALTER TABLE ${table} DISABLE TRIGGER ${table}_append_only`)
    await admin.query(sql, params)
    await admin.query(`ALTER TABLE ${table} ENABLE ALWAYS TRIGGER ${table}_append_only`)
    await admin.query('COMMIT')
  } catch (err) {
    await admin.query('ROLLBACK')
    throw err
  }
}

function assertBroken (v: ChainVerification, seq: number, reason: RegExp) {
  assert.equal(v.valid, false, 'tampering goes unnoticed')
  assert.equal(v.firstBrokenSeq, seq, v.reason ?? '')
  assert.match(v.reason ?? '', reason)
}

async function withTimeout<T> (promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const expired = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms)
  })
  try {
    return await Promise.race([promise, expired])
  } finally {
    clearTimeout(timer)
  }
}

test('canonical JSON follows RFC 8785: sorted keys by UTF-16 units, ECMAScript numbers, minimal escapes', () => {
  // The key-sorting and number examples of RFC 8785 sections 3.2.3 and 3.2.2.3.
  const keys = Object.fromEntries([['\u20ac', 1], ['\r', 2], ['\ufb33', 3], ['1', 4], ['\ud83d\ude00', 5], ['\u0080', 6], ['\u00f6', 7]])
  assert.equal(canonicalJson(keys), '{"\\r":2,"1":4,"\u0080":6,"\u00f6":7,"\u20ac":1,"\ud83d\ude00":5,"\ufb33":3}')
  assert.equal(canonicalJson([1e21, 1e-7, 0.000001, -0, Number('333333333.33333329'), 1e30, 4.5, 2e-3, 0.1]),
    '[1e+21,1e-7,0.000001,0,333333333.3333333,1e+30,4.5,0.002,0.1]')
  assert.equal(canonicalJson({ b: [true, null, 'x"\\\n\u001f'], a: { d: 1, c: {} } }),
    '{"a":{"c":{},"d":1},"b":[true,null,"x\\"\\\\\\n\\u001f"]}')
  assert.throws(() => canonicalJson(Number.NaN), /NaN/)
})

test('appended rows form a chain that verifies, whatever the data holds', async () => {
  const t = randomUUID()
  const awkward = {
    unicode: 'héllo ✓ 😀 \u2028',
    nul: 'a\u0000b',
    lone: 'x\ud800y',
    big: 1e21,
    small: 1e-7,
    fraction: 0.1,
    negZero: -0,
    when: new Date('2026-01-02T03:04:05.678Z'),
    skipped: undefined,
    nested: { z: [1, { y: 2, x: [] }], a: null }
  }
  const results = await app1.withTenant(t, async c => [
    await appendAudit(c, 'audit_log', t, entry(1, awkward)),
    await appendAudit(c, 'audit_log', t, { actor: { type: 'system', id: null }, action: 'no.target' }),
    await appendAudit(c, 'audit_log', t, entry(3))
  ])
  assert.deepEqual(results.map(r => r.seq), [1, 2, 3])
  const v = await verifyAs(t)
  assert.deepEqual({ valid: v.valid, checked: v.checked, firstBrokenSeq: v.firstBrokenSeq, head: v.head },
    { valid: true, checked: 3, firstBrokenSeq: null, head: results[2] })

  const { events } = await app1.withTenant(t, c => listEvents(c, 'audit_log', t, { limit: 10 }))
  const first = events.find(e => e.seq === 1)!
  assert.equal(first.prevHash, GENESIS_HASH)
  const { skipped, ...kept } = awkward
  assert.equal(skipped, undefined)
  assert.deepEqual(first.data, {
    ...kept, i: 1, nul: 'a\ufffdb', lone: 'x\ufffdy', negZero: 0, when: '2026-01-02T03:04:05.678Z'
  }, 'stored as hashed: Dates as ISO strings, undefined dropped, unstorable characters replaced')
  assert.equal(events.find(e => e.seq === 2)!.target, null)
  assert.match(first.occurredAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
  assert.equal((await app1.withTenant(t, c => verifyChain(c, 'audit_log', t.toUpperCase()))).valid, true,
    'the id is hashed as the database writes it')
  // Anyone with the rows can recompute a hash: the canonical form is documented, not hidden in SQL.
  assert.equal(chainRowHash('audit_log', t, first), first.hash)
})

test('1,000 concurrent appends to one chain from two app instances make one linear chain', async () => {
  const t = randomUUID()
  const results = await Promise.all(Array.from({ length: 1000 }, (_, i) =>
    (i % 2 ? app1 : app2).withTenant(t, c => appendAudit(c, 'audit_log', t, entry(i)))))
  assert.deepEqual(results.map(r => r.seq).sort((a, b) => a - b), Array.from({ length: 1000 }, (_, i) => i + 1), 'gapless, no seq twice')
  const v = await verifyAs(t, 'audit_log', { batchSize: 128 })
  assert.equal(v.valid, true, v.reason ?? '')
  assert.equal(v.checked, 1000)
  assert.equal(v.head.seq, 1000)
  const { rows: [forks] } = await admin.query(
    'SELECT count(*)::int AS n FROM audit_log a JOIN audit_log b ON a.tenant_id = b.tenant_id AND a.prev_hash = b.prev_hash ' +
    'AND a.seq < b.seq WHERE a.tenant_id = $1', [t])
  assert.equal(forks.n, 0, 'no two rows link to the same predecessor')
})

test('appends to different tenants do not wait on each other; the same chain does', async () => {
  const [a, b] = [randomUUID(), randomUUID()]
  const holder = await poolA.connect()
  try {
    await holder.query(`BEGIN; ${app1.context.statement({ tenantId: a })}`)
    assert.equal((await appendAudit(holder, 'audit_log', a, entry(1))).seq, 1)

    // Tenant B's chain, and tenant A's other chain, append while A's audit_log lock is held.
    const other = await withTimeout(app2.withTenant(b, c => appendAudit(c, 'audit_log', b, entry(1))), 5000, 'tenant B append')
    assert.equal(other.seq, 1)
    await withTimeout(app2.withTenant(a, c => appendAudit(c, 'tenant_operation_log', a, entry(1))), 5000, 'tenant A operation-log append')

    // A second append to A's audit_log waits for the lock, then links to the committed row.
    const waiting = app2.withTenant(a, c => appendAudit(c, 'audit_log', a, entry(2)))
    // Seen in pg_locks: the runtime login's statement text is not recorded (track_activities off).
    await waitFor(async () => (await admin.query(
      'SELECT count(*)::int AS n FROM pg_locks WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database()) ' +
      "AND locktype = 'advisory' AND NOT granted")).rows[0].n === 1,
    { what: 'the second append to wait on the chain lock' })
    await holder.query('COMMIT')
    assert.equal((await withTimeout(waiting, 5000, 'the waiting append')).seq, 2)
  } finally {
    holder.release()
  }
  assert.equal((await verifyAs(a)).valid, true)
})

test('an append reads a handful of pages however long its chain, even on a table the planner has no statistics for', async () => {
  const t = randomUUID()
  await seed(t, 3000) // one transaction: autovacuum cannot analyse the table in between
  const blocks = await app1.withTenant(t, async c => {
    const { rows: [row] } = await c.query(`EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)
      SELECT * FROM audit_append('audit_log', $1, '{"action":"x","actor":{"id":null,"type":"system"},"data":{},"target":null}')`, [t])
    const plan = row['QUERY PLAN'][0].Plan
    return plan['Shared Hit Blocks'] + plan['Shared Read Blocks']
  })
  // A plan that sorts the tenant's rows to find the head would touch every page of the chain (~100 here).
  assert.ok(blocks < 40, `one append touched ${blocks} blocks`)
})

test('a failing change rolls its audit row back, and the next append reuses the seq (gapless)', async () => {
  const t = randomUUID()
  await seed(t, 3)
  await assert.rejects(app1.withTenant(t, async c => {
    await appendAudit(c, 'audit_log', t, entry(4))
    await c.query('SELECT 1 / 0') // the change the row records fails
  }), /division by zero/)
  assert.equal((await app1.withTenant(t, c => chainHead(c, 'audit_log', t))).seq, 3)
  assert.equal((await app1.withTenant(t, c => appendAudit(c, 'audit_log', t, entry(4)))).seq, 4)
  assert.equal((await verifyAs(t)).valid, true)
})

test('the runtime role cannot UPDATE, DELETE or TRUNCATE; the trigger refuses even a superuser', async () => {
  const t = randomUUID()
  await seed(t, 2)
  for (const sql of ["UPDATE audit_log SET action = 'x'", 'DELETE FROM audit_log', 'TRUNCATE audit_log',
    "UPDATE operator_audit_events SET action = 'x'", 'TRUNCATE tenant_operation_log', 'DELETE FROM audit_checkpoints']) {
    await assert.rejects(app1.withTenant(t, c => c.query(sql)), /permission denied/, sql)
  }
  for (const sql of ["UPDATE audit_log SET action = 'x' WHERE false", 'DELETE FROM audit_log', 'TRUNCATE audit_log',
    'TRUNCATE tenant_operation_log, operator_audit_events', 'DELETE FROM audit_checkpoints']) {
    await assert.rejects(admin.query(sql), /append-only/, sql)
  }
  // ENABLE ALWAYS: a replica-mode session (which skips ordinary triggers) is refused too.
  await admin.query('BEGIN')
  await admin.query("SET LOCAL session_replication_role = 'replica'")
  await assert.rejects(admin.query('DELETE FROM audit_log'), /append-only/)
  await admin.query('ROLLBACK')
  assert.equal((await verifyAs(t)).checked, 2)
})

test('appends refuse a REPEATABLE READ transaction, whose snapshot could predate the lock', async () => {
  const t = randomUUID()
  const client = await poolA.connect()
  try {
    await client.query(`BEGIN ISOLATION LEVEL REPEATABLE READ; ${app1.context.statement({ tenantId: t })}`)
    await assert.rejects(appendAudit(client, 'audit_log', t, entry(1)), /READ COMMITTED/)
  } finally {
    await client.query('ROLLBACK')
    client.release()
  }
})

test('tenant A cannot read, verify, append to or checkpoint tenant B\'s chains; only operators see the operator chain', async () => {
  const [a, b] = [randomUUID(), randomUUID()]
  await seed(a, 3)
  await seed(b, 5)
  await app1.withTenant(b, c => createCheckpoints(c, signer, b))
  await app1.withTenant(a, async c => {
    assert.equal((await c.query('SELECT count(*)::int AS n FROM audit_log WHERE tenant_id = $1', [b])).rows[0].n, 0)
    assert.equal((await c.query('SELECT count(*)::int AS n FROM audit_checkpoints WHERE tenant_id = $1', [b])).rows[0].n, 0)
    assert.deepEqual((await listEvents(c, 'audit_log', b, { limit: 10 })).events, [])
    const v = await verifyChain(c, 'audit_log', b, { checkpoints: [storedCheckpoints(c, signer, 'audit_log', b)] })
    assert.deepEqual([v.checked, v.head.seq, v.checkpointsChecked], [0, 0, 0], 'B\'s rows are invisible, not verified')
    assert.deepEqual((await listEvents(c, 'operator_audit_events', null, { limit: 10 })).events, [])
  })
  await assert.rejects(app1.withTenant(a, c => appendAudit(c, 'audit_log', b, entry(1))), /row-level security/)
  await assert.rejects(app1.withTenant(a, c => appendAudit(c, 'operator_audit_events', null, entry(1))), /row-level security/)
  // No context at all sees and appends nothing.
  assert.equal((await poolA.query('SELECT count(*)::int AS n FROM audit_log')).rows[0].n, 0)
  await assert.rejects(app1.withTransaction(c => appendAudit(c, 'audit_log', a, entry(1))), /row-level security/)
  // An operator reads every chain (the operator verify walks them all).
  const seen = await app1.withTransaction(async c => {
    await app1.setContext(c, { operator: true })
    await appendAudit(c, 'operator_audit_events', null, entry(1))
    return (await c.query('SELECT count(*)::int AS n FROM audit_log WHERE tenant_id IN ($1, $2)', [a, b])).rows[0].n
  })
  assert.equal(seen, 8)
})

test(
  'catalog: each audit table has forced RLS, a policy, an always-on append-only trigger; the runtime role reads, appends via audit_append',
  async () => {
    assert.deepEqual(await rlsViolations(admin), [])
    const tables = ['audit_checkpoints', 'audit_log', 'operator_audit_events', 'tenant_operation_log']
    const { rows } = await admin.query(`
    SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
           (SELECT count(*)::int FROM pg_policy p WHERE p.polrelid = c.oid) AS policies,
           (SELECT string_agg(t.tgenabled::text, '') FROM pg_trigger t
             WHERE t.tgrelid = c.oid AND t.tgname = c.relname || '_append_only') AS trigger,
           array(SELECT p FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p
                 WHERE has_table_privilege('govula_runtime', c.oid, p)) AS runtime
      FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY($1) ORDER BY c.relname`, [tables])
    assert.equal(rows.length, tables.length)
    for (const r of rows) {
      // Checkpoints are inserted as they are: each is signed by the service's key and checked against it.
      const runtime = r.relname === 'audit_checkpoints' ? ['SELECT', 'INSERT'] : ['SELECT']
      assert.deepEqual([r.relrowsecurity, r.relforcerowsecurity, r.policies > 0, r.trigger, r.runtime],
        [true, true, true, 'A', runtime], r.relname)
    }
  })

test('tampering as a superuser is detected, each at the right first bad seq', async (t) => {
  await t.test('one byte of data edited', async () => {
    const tenant = randomUUID()
    await seed(tenant, 20)
    await tamper('audit_log', 'UPDATE audit_log SET data = \'{"i": 8}\' WHERE tenant_id = $1 AND seq = 7', [tenant])
    assertBroken(await verifyAs(tenant, 'audit_log', { batchSize: 3 }), 7, /hash does not match/)
  })

  await t.test('a middle row deleted', async () => {
    const tenant = randomUUID()
    await seed(tenant, 20)
    await tamper('audit_log', 'DELETE FROM audit_log WHERE tenant_id = $1 AND seq = 10', [tenant])
    assertBroken(await verifyAs(tenant), 10, /seq 10 is missing/)
  })

  await t.test('two rows swapped', async () => {
    const tenant = randomUUID()
    await seed(tenant, 20)
    await tamper('audit_log', `
      UPDATE audit_log x SET occurred_at = y.occurred_at, actor = y.actor, action = y.action, target = y.target, data = y.data,
        prev_hash = y.prev_hash, hash = y.hash
        FROM audit_log y WHERE x.tenant_id = $1 AND y.tenant_id = $1 AND x.seq IN (5, 6) AND y.seq = 11 - x.seq`, [tenant])
    assertBroken(await verifyAs(tenant), 5, /prev_hash does not match/)
  })

  await t.test('the tail truncated: only a checkpoint sees it', async () => {
    const tenant = randomUUID()
    await seed(tenant, 20)
    const exported = await app1.withTenant(tenant, c => createCheckpoints(c, signer, tenant))
    await tamper('audit_log', 'DELETE FROM audit_log WHERE tenant_id = $1 AND seq > 15', [tenant])
    assert.equal((await verifyAs(tenant)).valid, true, 'the hashes alone cannot tell a shorter chain')
    const stored = await app1.withTenant(tenant, c =>
      verifyChain(c, 'audit_log', tenant, { checkpoints: [storedCheckpoints(c, signer, 'audit_log', tenant)] }))
    assertBroken(stored, 16, /ends at seq 15 .* covers seq 20: its tail was truncated/)
    const heads = trustedHeads(signer, tenant, exported).get('audit_log')!
    assertBroken(await verifyAs(tenant, 'audit_log', { checkpoints: [headsFrom(heads)] }), 16, /truncated/)
  })

  await t.test('the whole chain recomputed: only a checkpoint sees it, at the first signed head that no longer matches', async () => {
    const tenant = randomUUID()
    await seed(tenant, 10)
    await app1.withTenant(tenant, c => createCheckpoints(c, signer, tenant)) // stored, at seq 10
    await seed(tenant, 10)
    const exported = await app1.withTenant(tenant, c => createCheckpoints(c, signer, tenant)) // at seq 20, kept outside

    // The attacker changes row 3 and recomputes every hash from there, with the published algorithm.
    const { rows } = await admin.query<Omit<ChainRow, 'seq'> & { seq: string }>(`
      SELECT seq, to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS "occurredAt",
             actor, action, target, data, prev_hash AS "prevHash", hash
        FROM audit_log WHERE tenant_id = $1 ORDER BY seq`, [tenant])
    let prev = GENESIS_HASH
    const recomputed: string[] = []
    for (const raw of rows) {
      const row = { ...raw, seq: Number(raw.seq), prevHash: prev, data: raw.seq === '3' ? { i: 3, forged: true } : raw.data }
      const hash = chainRowHash('audit_log', tenant, row)
      await tamper('audit_log', 'UPDATE audit_log SET data = $3, prev_hash = $4, hash = $5 WHERE tenant_id = $1 AND seq = $2',
        [tenant, row.seq, JSON.stringify(row.data), prev, hash])
      recomputed.push(hash)
      prev = hash
    }
    assert.equal((await verifyAs(tenant)).valid, true, 'a recomputed chain is internally consistent')
    const withStored = await app1.withTenant(tenant, c =>
      verifyChain(c, 'audit_log', tenant, { checkpoints: [storedCheckpoints(c, signer, 'audit_log', tenant)] }))
    assertBroken(withStored, 10, /seq 10 differs from the checkpoint signed at .*rewritten/)
    const heads = headsFrom(trustedHeads(signer, tenant, exported).get('audit_log')!)
    assertBroken(await verifyAs(tenant, 'audit_log', { checkpoints: [heads] }), 20, /seq 20 differs from the checkpoint/)

    // Rewriting the stored checkpoints to match does not help: their signatures no longer hold.
    await tamper('audit_checkpoints', "UPDATE audit_checkpoints SET hash = $2 WHERE tenant_id = $1 AND chain = 'audit_log' AND seq = 10",
      [tenant, recomputed[9]])
    const forged = await app1.withTenant(tenant, c =>
      verifyChain(c, 'audit_log', tenant, { checkpoints: [storedCheckpoints(c, signer, 'audit_log', tenant)] }))
    assertBroken(forged, 10, /does not match what was signed/)
  })
})

test('checkpoints: signed, deduplicated, and refused when forged, foreign or signed by another key', async () => {
  const tenant = randomUUID()
  await seed(tenant, 4)
  await seed(tenant, 2, 'tenant_operation_log')
  const first = await app1.withTenant(tenant, c => createCheckpoints(c, signer, tenant, new Date('2026-05-01T00:00:00Z')))
  assert.deepEqual(first.map(cp => [cp.chain, cp.seq]), [['audit_log', 4], ['tenant_operation_log', 2]])
  const again = await app1.withTenant(tenant, c => createCheckpoints(c, signer, tenant))
  assert.deepEqual(again, first, 'an unchanged head is not signed and stored again')
  assert.equal((await admin.query('SELECT count(*)::int AS n FROM audit_checkpoints WHERE tenant_id = $1', [tenant])).rows[0].n, 2)

  const cp = first[0]!
  assert.equal(openCheckpoint(signer, cp).hash, cp.hash)
  // Checkable offline with nothing but the public key.
  const verifierOnly = createAuditSigner(otherKey, { previousPublicKeys: [signer.publicKey] })
  assert.equal(openCheckpoint(verifierOnly, cp).seq, 4)
  assert.throws(() => openCheckpoint(signer, { ...cp, body: cp.body.replace('"seq":4', '"seq":40') }), /signature does not verify/)
  assert.throws(() => openCheckpoint(createAuditSigner(otherKey), cp), /signature does not verify/)
  assert.throws(() => trustedHeads(signer, randomUUID(), first), /another tenant/)
  assert.throws(() => createAuditSigner('too short'), /32-byte/)

  // The operator chain checkpoints alone, in operator context.
  const op = await app1.withTransaction(async c => {
    await app1.setContext(c, { operator: true })
    return createCheckpoints(c, signer, null)
  })
  assert.deepEqual(op.map(c => [c.chain, c.tenantId]), [['operator_audit_events', null]])
})

test('listing pages newest first, filters by action, and the cursor walks the whole chain', async () => {
  const t = randomUUID()
  await app1.withTenant(t, async c => {
    for (let i = 1; i <= 7; i++) await appendAudit(c, 'audit_log', t, { ...entry(i), action: i % 2 ? 'odd' : 'even' })
  })
  const page1 = await app1.withTenant(t, c => listEvents(c, 'audit_log', t, { limit: 3 }))
  assert.deepEqual(page1.events.map(e => e.seq), [7, 6, 5])
  assert.equal(page1.nextCursor, '5')
  const page3 = await app1.withTenant(t, c => listEvents(c, 'audit_log', t, { limit: 3, cursor: 2 }))
  assert.deepEqual([page3.events.map(e => e.seq), page3.nextCursor], [[1], null])
  const odd = await app1.withTenant(t, c => listEvents(c, 'audit_log', t, { limit: 10, action: 'odd' }))
  assert.deepEqual(odd.events.map(e => e.seq), [7, 5, 3, 1])
})

test('every chain is enumerated for the operator verify, and a broken one is named', async () => {
  const scratch = await createTestDatabase()
  const pool = new pg.Pool({ connectionString: scratch.runtimeUrl, max: 2 })
  pool.on('error', () => {})
  after(() => pool.end())
  const sdb = await runtimeDatabase(scratch, pool)
  const tenants = [randomUUID(), randomUUID(), randomUUID()].sort()
  for (const t of tenants) await sdb.withTenant(t, c => appendAudit(c, 'audit_log', t, entry(1)))
  await sdb.withTenant(tenants[1]!, c => appendAudit(c, 'tenant_operation_log', tenants[1]!, entry(1)))
  const verifyAll = () => sdb.withTransaction(async (c: Queryable) => {
    await sdb.setContext(c, { operator: true })
    await appendAudit(c, 'operator_audit_events', null, entry(0))
    const out = []
    for await (const { chain, tenantId } of allChains(c)) out.push(await verifyChain(c, chain, tenantId))
    return out
  })
  const clean = await verifyAll()
  assert.deepEqual(clean.map(v => [v.chain, v.tenantId, v.valid]), [
    ['operator_audit_events', null, true],
    ...tenants.flatMap(t => [['audit_log', t, true], ['tenant_operation_log', t, true]])
  ])
  const sAdmin = new pg.Client({ connectionString: scratch.adminUrl })
  sAdmin.on('error', () => {})
  await sAdmin.connect()
  await sAdmin.query('ALTER TABLE tenant_operation_log DISABLE TRIGGER tenant_operation_log_append_only')
  await sAdmin.query("UPDATE tenant_operation_log SET action = 'forged'")
  await sAdmin.end()
  const broken = (await verifyAll()).filter(v => !v.valid)
  assert.deepEqual(broken.map(v => [v.chain, v.tenantId, v.firstBrokenSeq]), [['tenant_operation_log', tenants[1], 1]])
})
