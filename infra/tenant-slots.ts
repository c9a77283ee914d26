import { AppError } from '../errors.js'
import type { Database, HeldTransaction } from './database.js'

// A tenant's share of this process's connection pool (docs/recording.md, "A tenant's share of
// the pool"). The pool is first come, first served: without a share, one tenant's slow reads
// fill it and every other tenant waits behind them. Each tenant may hold at most `max`
// connections at once; a request over that waits in its own tenant's queue, holding no
// connection, so other tenants' checkouts never queue behind it, and is refused with a 429 once
// it has waited `queueTimeoutMs`. In process, like the pool itself: a Map of counters, no
// round trip.

/** Gives a slot back. Calling it again does nothing. */
export type ReleaseSlot = () => void

interface Waiter { grant(): void }
interface TenantEntry { busy: number, waiting: Waiter[] }

export interface TenantSlots {
  readonly max: number
  /** A slot now, or null when the tenant holds all of its own. */
  tryTake(tenantId: string): ReleaseSlot | null
  /** A slot, waiting for one of the tenant's own (FIFO); refused with RATE_LIMITED after queueTimeoutMs. */
  take(tenantId: string): Promise<ReleaseSlot>
  /** Slots the tenant holds now (for tests and metrics). */
  busy(tenantId: string): number
  /** Requests of the tenant waiting for one of its slots. */
  queued(tenantId: string): number
}

/** DB_TENANT_MAX_CONNECTIONS, or half the pool (at least one): room for another tenant whatever one does. */
export function tenantMaxConnections (config: { DB_MAX_CONNECTIONS: number, DB_TENANT_MAX_CONNECTIONS?: number | undefined }): number {
  return config.DB_TENANT_MAX_CONNECTIONS ?? Math.ceil(config.DB_MAX_CONNECTIONS / 2)
}

// 429, not 503: the refusal is this tenant's own concurrency, and the service is up for every
// other tenant. A 503 would read as an outage to monitoring, and a balancer retrying 503s on the
// next replica (deploy/nginx/proxy.conf) would carry the same slow load there.
export class TenantBusyError extends AppError {
  constructor (max: number) {
    super('RATE_LIMITED',
      `this tenant already has ${max} database connections busy in this instance (DB_TENANT_MAX_CONNECTIONS); retry in 1 s`,
      { headers: { 'retry-after': '1' } })
  }
}

export function createTenantSlots ({ max, queueTimeoutMs }: { max: number, queueTimeoutMs: number }): TenantSlots {
  if (!Number.isInteger(max) || max < 1) throw new RangeError('createTenantSlots: max must be an integer >= 1')
  const tenants = new Map<string, TenantEntry>()

  function releaser (tenantId: string, entry: TenantEntry): ReleaseSlot {
    let released = false
    return () => {
      if (released) return
      released = true
      // Handed straight to the next in line: a newcomer cannot take it first.
      const next = entry.waiting.shift()
      if (next) return next.grant()
      if (--entry.busy === 0) tenants.delete(tenantId) // memory stays bounded by the tenants busy now
    }
  }

  function tryTake (tenantId: string): ReleaseSlot | null {
    let entry = tenants.get(tenantId)
    if (!entry) tenants.set(tenantId, entry = { busy: 0, waiting: [] })
    if (entry.busy >= max) return null
    entry.busy++
    return releaser(tenantId, entry)
  }

  return {
    max,
    tryTake,
    take (tenantId) {
      const now = tryTake(tenantId)
      if (now) return Promise.resolve(now)
      if (queueTimeoutMs <= 0) return Promise.reject(new TenantBusyError(max))
      const entry = tenants.get(tenantId)!
      return new Promise((resolve, reject) => {
        const waiter: Waiter = {
          grant () {
            clearTimeout(timer)
            resolve(releaser(tenantId, entry))
          }
        }
        const timer = setTimeout(() => {
          entry.waiting.splice(entry.waiting.indexOf(waiter), 1)
          reject(new TenantBusyError(max))
        }, queueTimeoutMs)
        entry.waiting.push(waiter)
      })
    },
    busy: (tenantId) => tenants.get(tenantId)?.busy ?? 0,
    queued: (tenantId) => tenants.get(tenantId)?.waiting.length ?? 0
  }
}

/** `db` whose withTenant holds one of the tenant's slots from before its checkout until its connection is back. */
export function capTenantCheckouts (db: Database, slots: TenantSlots): Database {
  return {
    ...db,
    async withTenant (tenantId, fn) {
      const release = await slots.take(tenantId)
      try {
        return await db.withTenant(tenantId, fn)
      } finally {
        release()
      }
    }
  }
}

/**
 * A tenant GET's held transaction (plugins/auth.ts) counted as one of its tenant's slots: its
 * connection was checked out for the bearer lookup, before the tenant was known. Over the share,
 * it is ended at once (null): the request's reads then wait for a slot like any other
 * (capTenantCheckouts). The slot is given back by whichever of run() and end() ends it.
 */
export async function countHeldTransaction (
  slots: TenantSlots, tenantId: string, transaction: HeldTransaction
): Promise<HeldTransaction | null> {
  const release = slots.tryTake(tenantId)
  if (!release) {
    await transaction.end()
    return null
  }
  return {
    run (fn) {
      const running = transaction.run(fn)
      return running && running.finally(release)
    },
    async end () {
      if (transaction.ended) return
      try {
        await transaction.end()
      } finally {
        release()
      }
    },
    get ended () { return transaction.ended }
  }
}
