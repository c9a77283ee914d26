import { createHash } from 'node:crypto'
import type { AuditChain, AuditEntry } from './audit-sink.js'
import type { Queryable } from '../infra/database.js'

// The tamper-evident audit chains (docs/audit.md): append inside the caller's transaction,
// read a page, and verify a chain by streaming it in bounded batches. No Fastify in here.

export type { AuditChain, AuditEntry } from './audit-sink.js'

export const TENANT_CHAINS = ['audit_log', 'tenant_operation_log'] as const satisfies readonly AuditChain[]
export const AUDIT_CHAINS = [...TENANT_CHAINS, 'operator_audit_events'] as const satisfies readonly AuditChain[]
/** prev_hash of row 1. */
export const GENESIS_HASH = '0'.repeat(64)

/**
 * RFC 8785 (JCS) canonical JSON of a plain JSON value: object keys sorted by UTF-16 code
 * units (what Array#sort does), no whitespace, and strings and numbers serialised as
 * ECMAScript's JSON.stringify does, which is exactly what JCS prescribes. Anything that is
 * not plain JSON (undefined, NaN, a Date, a Map) is refused rather than guessed at.
 */
export function canonicalJson (value: unknown): string {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return JSON.stringify(value)
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError('canonical JSON has no NaN or Infinity')
      return JSON.stringify(value)
    case 'object': {
      if (value === null) return 'null'
      if (Array.isArray(value)) return '[' + value.map(canonicalJson).join(',') + ']'
      const proto = Object.getPrototypeOf(value)
      if (proto !== Object.prototype && proto !== null) throw new TypeError('canonical JSON takes plain objects only')
      const object = value as Record<string, unknown>
      return '{' + Object.keys(object).sort().map(k => JSON.stringify(k) + ':' + canonicalJson(object[k])).join(',') + '}'
    }
    default:
      throw new TypeError(`canonical JSON has no ${typeof value}`)
  }
}

// PostgreSQL's jsonb refuses \u0000 and lone surrogates. An audit row must never make the
// change it records fail, so such characters become U+FFFD before hashing and storing.
const UNSTORABLE = /\0|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g

/** The entry as plain JSON, exactly as it will be stored (Dates become strings, undefined goes). */
function plainEntry (entry: AuditEntry): unknown {
  const text = JSON.stringify(
    { action: entry.action, actor: entry.actor, data: entry.data ?? {}, target: entry.target ?? null },
    (_key, v: unknown) => typeof v === 'string' ? v.replace(UNSTORABLE, '\ufffd') : v)
  return JSON.parse(text)
}

export interface AppendResult { seq: number, hash: string }

/**
 * Appends one row to a chain, in the caller's transaction (already BEGun, with app.tenant_id
 * set for a tenant chain or app.operator = 'on' for the operator chain), so the row commits
 * or rolls back with the change it records. One round trip: audit_append() takes the chain's
 * lock, reads the head, stamps the time, hashes and inserts (db/migrations/0003_audit.sql).
 * Matches services/audit-sink.ts's AuditSink.
 */
export async function appendAudit (
  client: Queryable, chain: AuditChain, tenantId: string | null, entry: AuditEntry
): Promise<AppendResult> {
  const { rows: [row] } = await client.query<{ seq: string, hash: string }>(
    'SELECT out_seq AS seq, out_hash AS hash FROM audit_append($1, $2, $3)',
    [chain, tenantId, canonicalJson(plainEntry(entry))])
  return { seq: Number(row!.seq), hash: row!.hash }
}

/** A chain row as verification reads it; occurredAt is the ISO 8601 text the hash covers. */
export interface ChainRow {
  seq: number
  occurredAt: string
  actor: unknown
  action: string
  target: unknown
  data: unknown
  prevHash: string
  hash: string
}

/** The hash a row must carry: SHA-256 of the canonical JSON audit_append() builds. */
export function chainRowHash (chain: AuditChain, tenantId: string | null, row: Omit<ChainRow, 'hash'>): string {
  const canonical = canonicalJson({
    chain,
    entry: { action: row.action, actor: row.actor, data: row.data, target: row.target },
    occurredAt: row.occurredAt,
    prevHash: row.prevHash,
    seq: row.seq,
    tenantId
  })
  return createHash('sha256').update(canonical, 'utf8').digest('hex')
}

// Static SQL per chain (table names never come from input). The time is formatted in SQL,
// in UTC, exactly as audit_append() formatted it for the hash.
const COLUMNS = `seq, to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS "occurredAt",
  actor, action, target, data, prev_hash AS "prevHash", hash`
const scope = (chain: AuditChain) => chain === 'operator_audit_events' ? '$1::uuid IS NULL' : 'tenant_id = $1'

// A verification batch is the seq range (after, after + size]: seq is gapless, so the range
// holds the next `size` rows of an intact chain, and bounding it in the index condition
// keeps each batch's cost fixed whatever plan the planner picks (with LIMIT alone, a plan
// that sorts could read the whole rest of the chain for every batch).
const pageAfterSql = Object.fromEntries(AUDIT_CHAINS.map(chain => [chain,
  `SELECT ${COLUMNS} FROM ${chain} WHERE ${scope(chain)} AND seq > $2 AND seq <= $2 + $3 ORDER BY seq`])) as Record<AuditChain, string>
const nextSeqSql = Object.fromEntries(AUDIT_CHAINS.map(chain => [chain,
  `SELECT seq FROM ${chain} WHERE ${scope(chain)} AND seq > $2 ORDER BY seq LIMIT 1`])) as Record<AuditChain, string>
const headSql = Object.fromEntries(AUDIT_CHAINS.map(chain => [chain,
  `SELECT seq, hash FROM ${chain} WHERE ${scope(chain)} ORDER BY seq DESC LIMIT 1`])) as Record<AuditChain, string>
const listSql = Object.fromEntries(AUDIT_CHAINS.map(chain => [chain,
  `SELECT ${COLUMNS} FROM ${chain}
    WHERE ${scope(chain)} AND ($2::bigint IS NULL OR seq < $2) AND ($3::text IS NULL OR action = $3)
    ORDER BY seq DESC LIMIT $4`])) as Record<AuditChain, string>

function toChainRow (r: Omit<ChainRow, 'seq'> & { seq: string }): ChainRow {
  return { ...r, seq: Number(r.seq) }
}

/**
 * The tenant id as the database writes it (lowercase), checked against the chain: the hash
 * covers its text form, so an uppercase id would not reproduce it.
 */
export function chainTenant (chain: AuditChain, tenantId: string | null): string | null {
  if ((chain === 'operator_audit_events') !== (tenantId === null)) {
    throw new TypeError(chain === 'operator_audit_events' ? 'operator_audit_events takes no tenant' : `${chain} needs a tenant`)
  }
  return tenantId === null ? null : tenantId.toLowerCase()
}

export interface ChainHead { seq: number, hash: string }

/** The last row of a chain ({seq: 0, hash: GENESIS_HASH} when it is empty). */
export async function chainHead (client: Queryable, chain: AuditChain, tenantId: string | null): Promise<ChainHead> {
  chainTenant(chain, tenantId)
  const { rows: [row] } = await client.query<{ seq: string, hash: string }>(headSql[chain], [tenantId])
  return row ? { seq: Number(row.seq), hash: row.hash } : { seq: 0, hash: GENESIS_HASH }
}

/** A row as the API shows it (the table's CHECK constraints guarantee these shapes). */
export interface AuditEvent {
  seq: number
  occurredAt: string
  actor: AuditEntry['actor']
  action: string
  target: { type: string, id: string } | null
  data: Record<string, unknown>
  prevHash: string
  hash: string
}

/** One page of a chain, newest first; `nextCursor` is the seq to pass back for the next page. */
export async function listEvents (client: Queryable, chain: AuditChain, tenantId: string | null,
  opts: { cursor?: number | null, limit: number, action?: string | null }): Promise<{ events: AuditEvent[], nextCursor: string | null }> {
  chainTenant(chain, tenantId)
  const { rows } = await client.query<Omit<ChainRow, 'seq'> & { seq: string }>(listSql[chain],
    [tenantId, opts.cursor ?? null, opts.action ?? null, opts.limit + 1])
  const events = rows.slice(0, opts.limit).map(toChainRow) as unknown as AuditEvent[]
  return { events, nextCursor: rows.length > opts.limit ? String(events[events.length - 1]!.seq) : null }
}

/** A signed head that verification holds the chain to (signature already checked). */
export interface TrustedHead { seq: number, hash: string, issuedAt?: string }

/**
 * Where trusted heads come from during a walk: `between(lo, hi)` returns those with
 * lo < seq <= hi, `after(seq)` the first beyond the chain's end (a truncated tail).
 * services/audit-checkpoints.ts provides one over the stored, signed checkpoints.
 */
export interface HeadSource {
  between(lo: number, hi: number): Promise<Array<TrustedHead | { seq: number, problem: string }>>
  after(seq: number): Promise<TrustedHead | { seq: number, problem: string } | null>
}

/** Trusted heads held in memory: an exported checkpoint handed back by its keeper. */
export function headsFrom (heads: TrustedHead[]): HeadSource {
  const sorted = [...heads].sort((a, b) => a.seq - b.seq)
  return {
    async between (lo, hi) { return sorted.filter(h => h.seq > lo && h.seq <= hi) },
    async after (seq) { return sorted.find(h => h.seq > seq) ?? null }
  }
}

export interface ChainVerification {
  chain: AuditChain
  tenantId: string | null
  valid: boolean
  /** Rows whose link and hash were checked (up to the first break). */
  checked: number
  /** The lowest seq proven wrong: a changed or missing row, or one that differs from a signed checkpoint. */
  firstBrokenSeq: number | null
  reason: string | null
  /** The last row read. */
  head: ChainHead
  /** Signed checkpoints the chain was held to. */
  checkpointsChecked: number
}

export interface VerifyOptions {
  /** Rows fetched per round trip: the walk holds at most this many rows in memory. */
  batchSize?: number
  /** Signed heads to hold the chain to (an exported checkpoint, the stored ones, or both). */
  checkpoints?: HeadSource[]
  /** Called with each batch's row count (tests assert the bound with it). */
  onBatch?: (rows: number) => void
}

export const DEFAULT_VERIFY_BATCH = 2000

/**
 * Walks a chain from seq 1 in keyset-paginated batches, so memory stays bounded whatever its
 * length, checking that seq is gapless, each row links to the previous one, each hash is
 * what its content gives, and each signed checkpoint still matches. Stops at the first break.
 * Runs with the caller's row-level security: a chain the caller cannot see is empty.
 */
export async function verifyChain (
  client: Queryable, chain: AuditChain, givenTenant: string | null, opts: VerifyOptions = {}
): Promise<ChainVerification> {
  const tenantId = chainTenant(chain, givenTenant)
  const batchSize = opts.batchSize ?? DEFAULT_VERIFY_BATCH
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError('batchSize must be a positive integer')
  const sources = opts.checkpoints ?? []
  let head: ChainHead = { seq: 0, hash: GENESIS_HASH }
  let checked = 0
  let checkpointsChecked = 0
  const result = (firstBrokenSeq: number | null, reason: string | null): ChainVerification =>
    ({ chain, tenantId, valid: firstBrokenSeq === null, checked, firstBrokenSeq, reason, head, checkpointsChecked })

  for (;;) {
    const { rows } = await client.query<Omit<ChainRow, 'seq'> & { seq: string }>(pageAfterSql[chain], [tenantId, head.seq, batchSize])
    opts.onBatch?.(rows.length)
    if (rows.length === 0) break
    // The signed heads inside this batch, lowest first, checked as the walk reaches them: the
    // first problem met, in a row or against a checkpoint, is the lowest seq proven wrong.
    const due = sources.length === 0
      ? []
      : (await Promise.all(sources.map(s => s.between(head.seq, Number(rows[rows.length - 1]!.seq))))).flat().sort((a, b) => a.seq - b.seq)
    let next = 0
    for (const raw of rows) {
      const row = toChainRow(raw)
      const expected = head.seq + 1
      if (row.seq !== expected) return result(expected, `seq ${expected} is missing (the next row is seq ${row.seq})`)
      if (row.prevHash !== head.hash) return result(row.seq, `prev_hash does not match the hash of seq ${head.seq}`)
      if (chainRowHash(chain, tenantId, row) !== row.hash) return result(row.seq, 'hash does not match the row\'s content')
      for (; next < due.length && due[next]!.seq === row.seq; next++) {
        const cp = due[next]!
        checkpointsChecked++
        if ('problem' in cp) return result(cp.seq, cp.problem)
        if (cp.hash !== row.hash) {
          return result(cp.seq, `seq ${cp.seq} differs from the checkpoint signed${cp.issuedAt ? ' at ' + cp.issuedAt : ''}: ` +
            'the chain was rewritten up to here')
        }
      }
      head = { seq: row.seq, hash: row.hash }
      checked++
    }
    if (rows.length < batchSize) break
  }
  // A short batch ends the chain, unless rows follow a hole at its end.
  const { rows: [following] } = await client.query<{ seq: string }>(nextSeqSql[chain], [tenantId, head.seq])
  if (following) return result(head.seq + 1, `seq ${head.seq + 1} is missing (the next row is seq ${following.seq})`)
  // A signed head beyond the end: rows that existed are gone.
  const beyond = (await Promise.all(sources.map(s => s.after(head.seq)))).filter(h => h !== null).sort((a, b) => a.seq - b.seq)[0]
  if (beyond) {
    checkpointsChecked++
    if ('problem' in beyond) return result(beyond.seq, beyond.problem)
    return result(head.seq + 1, `the chain ends at seq ${head.seq} but a checkpoint` +
      `${beyond.issuedAt ? ' signed at ' + beyond.issuedAt : ''} covers seq ${beyond.seq}: its tail was truncated`)
  }
  return result(null, null)
}

// (min() has no uuid variant before PostgreSQL 18, hence ORDER BY ... LIMIT 1.)
const tenantAfter = (cond: string) => `
  SELECT least(
    (SELECT tenant_id FROM audit_log WHERE ${cond} ORDER BY tenant_id LIMIT 1),
    (SELECT tenant_id FROM tenant_operation_log WHERE ${cond} ORDER BY tenant_id LIMIT 1),
    (SELECT tenant_id FROM audit_checkpoints WHERE chain = 'audit_log' AND ${cond} ORDER BY tenant_id LIMIT 1),
    (SELECT tenant_id FROM audit_checkpoints WHERE chain = 'tenant_operation_log' AND ${cond} ORDER BY tenant_id LIMIT 1)
  )::text AS t`
const FIRST_TENANT = tenantAfter('true')
const NEXT_TENANT = tenantAfter('tenant_id > $1')

/** Every chain in the database, one at a time (operator chain first, then each tenant's). */
export async function * allChains (client: Queryable): AsyncGenerator<{ chain: AuditChain, tenantId: string | null }> {
  yield { chain: 'operator_audit_events', tenantId: null }
  // A loose index scan over the tenants that have rows or checkpoints: one short query per
  // tenant, never a DISTINCT over millions of rows. Checkpoints count too, so a tenant whose
  // rows were all deleted still shows up (and fails against its checkpoints).
  let after: string | null = null
  for (;;) {
    const result: { rows: Array<{ t: string | null }> } =
      await client.query(after === null ? FIRST_TENANT : NEXT_TENANT, after === null ? [] : [after])
    const tenantId = result.rows[0]?.t
    if (!tenantId) return
    for (const chain of TENANT_CHAINS) yield { chain, tenantId }
    after = tenantId
  }
}
