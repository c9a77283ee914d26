import { isUuid, type Database, type Queryable, type TenantRun } from '../infra/database.js'
import type { Decision } from './entitlements.js'
import type { Logger } from '../infra/logger.js'
import { eachTenant } from '../infra/each-tenant.js'
import type { TenantSlots } from '../infra/tenant-slots.js'

// Recording mode (docs/recording.md): idempotent batch ingest, ordered reads with a keyset
// cursor, the events-per-minute budget and the retention purge. Framework-free: the route
// plugin maps the outcomes onto HTTP.

export interface RecordingEventInput {
  id: string
  recordingId: string
  type: string
  occurredAt: string
  payload: Record<string, unknown>
}

export interface RecordingEvent {
  id: string
  recordingId: string
  type: string
  occurredAt: Date
  payload: unknown
}

export interface RecordingSummary { recordingId: string, events: number, firstAt: Date, lastAt: Date }

export interface BatchLimits {
  maxPayloadBytes: number
  /** How far ahead of the server's clock an occurredAt may be (client clocks drift). */
  maxFutureMs?: number
}

/** One event the schema let through but the batch limits refuse; `field` is the event's key. */
export interface BatchProblem { index: number, field: 'id' | 'type' | 'payload' | 'occurredAt', message: string }

export type PreparedBatch = { ok: true, count: number, document: string } | { ok: false, problems: BatchProblem[] }

const DAY_MS = 86_400_000
const MAX_PROBLEMS = 20
// What json/jsonb and text refuse: NUL, and a lone UTF-16 surrogate, which JSON.stringify
// writes as a \udXXX escape. In JSON text an escape counts only after an even run of backslashes.
const UNSTORABLE_JSON = /(?:^|[^\\])(?:\\\\)*\\u(?:0000|d[89a-f][0-9a-f]{2})/i
const UNSTORABLE = 'holds \\u0000 or a lone surrogate, which Postgres cannot store'

/**
 * Checks what a JSON schema cannot (a payload's size as JSON, a timestamp Postgres will
 * accept) and renders the batch as the one JSON document the insert reads. Each payload is
 * stringified once: for its size and for the document.
 */
export function prepareBatch (events: readonly RecordingEventInput[], limits: BatchLimits, now = Date.now()): PreparedBatch {
  const { maxPayloadBytes, maxFutureMs = DAY_MS } = limits
  const problems: BatchProblem[] = []
  const rows: string[] = []
  for (let i = 0; i < events.length && problems.length < MAX_PROBLEMS; i++) {
    const e = events[i]!
    // The schema's uuid format also takes the urn:uuid: form, which Postgres's uuid type does not.
    if (!isUuid(e.id)) problems.push({ index: i, field: 'id', message: 'must be a UUID of the form 8-4-4-4-12 hex digits' })
    const type = JSON.stringify(e.type)
    if (UNSTORABLE_JSON.test(type)) problems.push({ index: i, field: 'type', message: UNSTORABLE })
    const payload = JSON.stringify(e.payload)
    if (UNSTORABLE_JSON.test(payload)) problems.push({ index: i, field: 'payload', message: UNSTORABLE })
    // UTF-8 takes at least one byte per UTF-16 unit and at most three: most payloads are
    // decided without counting bytes.
    const bytes = payload.length * 3 <= maxPayloadBytes ? 0 : Buffer.byteLength(payload)
    if (bytes > maxPayloadBytes) {
      problems.push({ index: i, field: 'payload', message: `is ${bytes} bytes as JSON; the limit is ${maxPayloadBytes}` })
    }
    const at = Date.parse(e.occurredAt)
    if (!Number.isFinite(at) || at < 0 || at > now + maxFutureMs) {
      problems.push({ index: i, field: 'occurredAt', message: 'must be a time between 1970 and one day ahead of the server clock' })
      continue
    }
    // toISOString keeps milliseconds: the stored precision (0005_recordings.sql says why).
    rows.push(`{"id":${JSON.stringify(e.id)},"recording_id":${JSON.stringify(e.recordingId)},"type":${type},` +
      `"occurred_at":"${new Date(at).toISOString()}","payload":${payload}}`)
  }
  if (problems.length) return { ok: false, problems }
  return { ok: true, count: events.length, document: `[${rows.join(',')}]` }
}

// The list reads recording_summaries (0010_recording_summaries.sql), one row per recording kept
// by triggers in the transaction of every ingest and purge: a page costs its own rows, however
// many events are stored. Keyset order (last_at, recording_id), on the index of that name.
const LIST_SQL = 'SELECT recording_id, events, first_at, last_at FROM recording_summaries WHERE tenant_id = $1'
export const LIST_FIRST_SQL = `${LIST_SQL} ORDER BY last_at DESC, recording_id DESC LIMIT $2`
const LIST_AFTER_SQL = `${LIST_SQL} AND (last_at, recording_id) < ($3, $4) ORDER BY last_at DESC, recording_id DESC LIMIT $2`

const EVENTS_SQL = 'SELECT id, recording_id, type, occurred_at, payload FROM recording_events WHERE tenant_id = $1 AND recording_id = $2'
const EVENTS_FIRST_SQL = `${EVENTS_SQL} ORDER BY occurred_at, id LIMIT $3`
const EVENTS_AFTER_SQL = `${EVENTS_SQL} AND (occurred_at, id) > ($4, $5) ORDER BY occurred_at, id LIMIT $3`

/** A keyset position: a time in epoch milliseconds and a tie-breaking key. */
interface Position { at: number, key: string }

export class InvalidCursorError extends Error {}

// Opaque to clients (they pass it back as they got it); base64url keeps it URL-safe.
export const encodeCursor = (p: Position) => Buffer.from(`${p.at}~${p.key}`).toString('base64url')
export function decodeCursor (cursor: string): Position {
  const match = /^(\d{1,15})~([A-Za-z0-9._:-]{1,128})$/.exec(Buffer.from(cursor, 'base64url').toString())
  if (!match) throw new InvalidCursorError('is not a cursor this service issued')
  return { at: Number(match[1]), key: match[2]! }
}

/** Ingest and reads of recording events, each in its tenant's row-level-security context. */
export function createRecordingService ({ db, slots }: { db: Database, slots?: TenantSlots }) {
  // Reads take the caller's TenantRun (a request's, see plugins/auth.ts); by default their own transaction.
  const own = (tenantId: string): TenantRun => fn => db.withTenant(tenantId, fn)
  return {
    /**
     * Stores a prepared batch; events already stored count as duplicates. One round trip:
     * recording_events_ingest (0005_recordings.sql) sets the tenant and runs the one
     * INSERT … ON CONFLICT DO NOTHING as its own transaction; the summaries' trigger
     * (0010_recording_summaries.sql) counts what it stored in the same statement. The call holds
     * one of the tenant's slots of the pool (services/tenant-slots.ts) while it runs.
     */
    async store (tenantId: string, batch: { count: number, document: string }) {
      if (!isUuid(tenantId)) throw new TypeError('store: tenantId must be a UUID')
      const release = await slots?.take(tenantId)
      try {
        const { rows: [row] } = await db.query<{ stored: number }>(
          'SELECT recording_events_ingest($1, $2) AS stored', [db.context.sign({ tenantId }), batch.document])
        const accepted = row!.stored
        return { accepted, duplicates: batch.count - accepted }
      } finally {
        release?.()
      }
    },

    /** Recordings with their event count and time range, the most recent first. */
    async list (tenantId: string, { limit, cursor }: { limit: number, cursor?: string | undefined }, run = own(tenantId)) {
      const after = cursor ? decodeCursor(cursor) : null
      const { rows } = await run(c => after
        ? c.query(LIST_AFTER_SQL, [tenantId, limit + 1, new Date(after.at), after.key])
        : c.query(LIST_FIRST_SQL, [tenantId, limit + 1]))
      const recordings: RecordingSummary[] = rows.slice(0, limit).map(r => ({
        recordingId: r.recording_id, events: Number(r.events), firstAt: r.first_at, lastAt: r.last_at
      }))
      const last = recordings[recordings.length - 1]
      return {
        recordings, nextCursor: rows.length > limit && last ? encodeCursor({ at: last.lastAt.getTime(), key: last.recordingId }) : null
      }
    },

    /**
     * One recording's events in (occurredAt, id) order. null when the tenant has no such
     * recording: another tenant's is invisible under row-level security, so it is "not found".
     */
    async events (
      tenantId: string, recordingId: string, { limit, cursor }: { limit: number, cursor?: string | undefined }, run = own(tenantId)
    ) {
      const after = cursor ? decodeCursor(cursor) : null
      if (after && !isUuid(after.key)) throw new InvalidCursorError('is not a cursor of this recording\'s events')
      return run(async (c: Queryable) => {
        const { rows } = after
          ? await c.query(EVENTS_AFTER_SQL, [tenantId, recordingId, limit + 1, new Date(after.at), after.key])
          : await c.query(EVENTS_FIRST_SQL, [tenantId, recordingId, limit + 1])
        if (rows.length === 0) {
          // An empty page past the end of a recording is a page; of no recording, a 404.
          const { rows: [hit] } = await c.query(
            'SELECT 1 FROM recording_events WHERE tenant_id = $1 AND recording_id = $2 LIMIT 1', [tenantId, recordingId])
          if (!hit) return null
        }
        const events: RecordingEvent[] = rows.slice(0, limit).map(r => ({
          id: r.id, recordingId: r.recording_id, type: r.type, occurredAt: r.occurred_at, payload: r.payload
        }))
        const last = events[events.length - 1]
        return { events, nextCursor: rows.length > limit && last ? encodeCursor({ at: last.occurredAt.getTime(), key: last.id }) : null }
      })
    }
  }
}

export type RecordingService = ReturnType<typeof createRecordingService>

interface BudgetWindow { start: number, used: number }

export type BudgetOutcome =
  /** Admitted; giveBack returns events that were not stored (this window only). */
  | { ok: true, limit: number, remaining: number, resetS: number, giveBack(n: number): void }
  /** Spent for this window (retry after resetS), or tooLarge: the batch alone is over the limit. */
  | { ok: false, tooLarge: boolean, limit: number, remaining: number, resetS: number }

/**
 * A per-tenant budget of events per fixed window (one minute from the tenant's first event in
 * it), counted in events. In-process: each replica counts its own share, so a tenant spread
 * over N replicas may ingest up to N times its limit (docs/recording.md). Expired windows are
 * swept once per window length: memory stays bounded by the tenants active in one window.
 */
export function createEventBudget ({ windowMs = 60_000, now = Date.now }: { windowMs?: number, now?: () => number } = {}) {
  const windows = new Map<string, BudgetWindow>()
  let lastSweep = now()

  function current (key: string, at: number): BudgetWindow {
    if (at - lastSweep >= windowMs) {
      for (const [k, w] of windows) if (at - w.start >= windowMs) windows.delete(k)
      lastSweep = at
    }
    let w = windows.get(key)
    if (!w || at - w.start >= windowMs) windows.set(key, w = { start: at, used: 0 })
    return w
  }

  return {
    windowS: Math.round(windowMs / 1000),
    /** Takes `n` events from the tenant's budget, all or none. */
    take (key: string, n: number, limit: number): BudgetOutcome {
      const at = now()
      const w = current(key, at)
      const resetS = Math.max(1, Math.ceil((w.start + windowMs - at) / 1000))
      const remaining = Math.max(0, limit - w.used)
      if (n > remaining) return { ok: false, tooLarge: n > limit, limit, remaining, resetS }
      w.used += n
      return {
        ok: true,
        limit,
        remaining: limit - w.used,
        resetS,
        // A later window (the same object only while it lasts) owes nothing.
        giveBack: (back: number) => { if (windows.get(key) === w) w.used = Math.max(0, w.used - back) }
      }
    }
  }
}

export type EventBudget = ReturnType<typeof createEventBudget>

const PURGE_SQL = `
DELETE FROM recording_events WHERE ctid = ANY (ARRAY(
  SELECT ctid FROM recording_events WHERE tenant_id = $1 AND occurred_at < $2
   ORDER BY occurred_at LIMIT $3))`

export interface PurgeDeps {
  db: Database
  log: Logger
  entitlements: { check(tenantId: string, feature: 'recording_retention_days'): Promise<Decision> }
  now?: () => number
}

/**
 * The retention job: deletes each tenant's events older than its recording_retention_days.
 * Bounded batches, each its own short transaction, oldest first, so a purge never holds
 * locks for long and an abort (checked before every batch) leaves the oldest gone. A tenant with no
 * retention limit (null) keeps everything; a limit of 0 keeps nothing. Each batch's DELETE
 * updates the recordings' summaries in its own statement (0010_recording_summaries.sql).
 */
export async function purgeExpiredRecordings ({ db, log, entitlements, now = Date.now }: PurgeDeps, signal: AbortSignal,
  { batchSize = 1000, tenantPageSize = 500 }: { batchSize?: number, tenantPageSize?: number } = {}) {
  let deleted = 0
  let batches = 0
  const tenants = await eachTenant(db, log, signal, async (tenantId) => {
    const { limit: days } = await entitlements.check(tenantId, 'recording_retention_days')
    if (days === null) return
    const cutoff = new Date(now() - days * DAY_MS)
    let fromTenant = 0
    while (!signal.aborted) {
      // A busy tenant (TenantBusyError) is skipped by eachTenant; what was deleted stays deleted.
      const { rowCount } = await db.withTenant(tenantId, c => c.query(PURGE_SQL, [tenantId, cutoff, batchSize]))
      batches++
      fromTenant += rowCount ?? 0
      if ((rowCount ?? 0) < batchSize) break
    }
    if (fromTenant > 0) log.info({ tenantId, deleted: fromTenant, retentionDays: days }, 'expired recording events purged')
    deleted += fromTenant
  }, tenantPageSize)
  return { deleted, tenants, batches, aborted: signal.aborted }
}
