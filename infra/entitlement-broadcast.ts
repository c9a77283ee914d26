import pg from 'pg'
import { isUuid } from './database.js'
import { BROADCAST_CHANNEL, CHANGE_TYPES, type ChangeType } from '../services/entitlements.js'
import type { Logger } from './logger.js'

export interface BroadcastOptions {
  /** A direct connection: a transaction-mode PgBouncer cannot hold LISTEN. */
  connectionString: string
  /** This process's per-boot token: our own NOTIFYs come back and are dropped. */
  originToken: string
  onChange(type: ChangeType, tenantId: string): void
  /** Called after every (re)connect, once LISTEN is in place: what was sent meanwhile is lost. */
  onConnect(): void
  log: Logger
  initialDelayMs?: number
  maxDelayMs?: number
}

export interface BroadcastState {
  connected: boolean
  reconnects: number
  /** Changes from other replicas applied here. */
  received: number
  /** Our own changes coming back, dropped. */
  echoes: number
  /** Malformed payloads ignored. */
  dropped: number
}

/** The wait before reconnect attempt `attempt` (0-based): 1 s, 2 s, 4 s … capped. */
export function backoffDelay (attempt: number, initialMs = 1000, maxMs = 30_000) {
  return Math.min(initialMs * 2 ** attempt, maxMs)
}

/** Parses and checks a NOTIFY payload: unknown input is data, never trusted. */
export function parseChange (payload: string | undefined): { type: ChangeType, tenantId: string, originToken: string } | null {
  try {
    const value = JSON.parse(payload ?? '') as unknown
    if (typeof value !== 'object' || value === null) return null
    const { type, tenantId, originToken } = value as Record<string, unknown>
    if (typeof type !== 'string' || !CHANGE_TYPES.has(type) || !isUuid(tenantId) || typeof originToken !== 'string') return null
    return { type: type as ChangeType, tenantId, originToken }
  } catch {
    return null
  }
}

/**
 * The cross-replica invalidation listener: one dedicated, long-lived pg.Client (a pooled
 * connection would carry its LISTEN back into the pool). It reconnects on error or end with
 * backoff 1 s → 2 s → 4 s … capped at 30 s, and never throws: while it is down, the engine's
 * TTL bounds staleness.
 */
export function createBroadcastListener (opts: BroadcastOptions) {
  const initial = opts.initialDelayMs ?? 1000
  const max = opts.maxDelayMs ?? 30_000
  const state: BroadcastState = { connected: false, reconnects: 0, received: 0, echoes: 0, dropped: 0 }
  let client: pg.Client | undefined
  let attempt = 0
  let timer: NodeJS.Timeout | undefined
  let stopped = false

  function lost (c: pg.Client, err?: unknown) {
    if (c !== client || stopped) return
    if (state.connected || attempt === 0) {
      opts.log.warn({ err }, 'entitlement broadcast listener lost its connection; caches fall back to their TTL')
    }
    state.connected = false
    client = undefined
    c.removeAllListeners('notification')
    c.end().catch(() => {})
    const delay = backoffDelay(attempt, initial, max)
    attempt++
    timer = setTimeout(() => { state.reconnects++; connect().catch(() => {}) }, delay)
  }

  async function connect () {
    if (stopped) return
    const c = new pg.Client({ connectionString: opts.connectionString, application_name: 'govula-broadcast' })
    client = c
    c.on('error', (err) => lost(c, err))
    c.on('end', () => lost(c))
    c.on('notification', (msg) => {
      const change = parseChange(msg.payload)
      if (!change) {
        state.dropped++
        opts.log.warn({ channel: msg.channel }, 'malformed entitlement notification ignored')
        return
      }
      if (change.originToken === opts.originToken) {
        state.echoes++ // our own change, already applied after its commit
        return
      }
      state.received++
      opts.onChange(change.type, change.tenantId)
    })
    try {
      await c.connect()
      await c.query(`LISTEN ${BROADCAST_CHANNEL}`)
      if (c !== client || stopped) return
      state.connected = true
      attempt = 0
      opts.onConnect()
      opts.log.info({ channel: BROADCAST_CHANNEL }, 'entitlement broadcast listening')
    } catch (err) {
      lost(c, err)
    }
  }

  return {
    state,
    start: () => connect(),
    async stop () {
      stopped = true
      clearTimeout(timer)
      const c = client
      client = undefined
      state.connected = false
      await c?.end().catch(() => {})
    }
  }
}
