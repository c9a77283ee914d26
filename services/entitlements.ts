import { EventEmitter } from 'node:events'
import type { Database, Queryable, TenantRun } from '../infra/database.js'

export const FEATURES = [
  'recording_mode', 'audit_export', 'seats', 'api_requests_per_minute', 'recording_events_per_minute', 'recording_retention_days'
] as const
export type FeatureKey = typeof FEATURES[number]
export const BOOLEAN_FEATURES: ReadonlySet<string> = new Set(['recording_mode', 'audit_export'])

export const LIFECYCLES = ['trial', 'active', 'past_due', 'suspended', 'cancelled'] as const
export type Lifecycle = typeof LIFECYCLES[number]

/** The legal lifecycle transitions; anything else is a 409. */
export const TRANSITIONS: Record<Lifecycle, readonly Lifecycle[]> = {
  trial: ['active', 'past_due', 'cancelled'],
  active: ['past_due', 'suspended', 'cancelled'],
  past_due: ['active', 'suspended', 'cancelled'],
  suspended: ['active', 'cancelled'],
  cancelled: []
}

export type Source = 'plan' | 'contract' | 'lifecycle'
export interface Decision {
  allowed: boolean
  /** Numeric features: the limit (null: unlimited). Boolean features: null. */
  limit: number | null
  source: Source
  reason: string
}

export type ChangeType = 'entitlement.changed' | 'contract.changed' | 'lifecycle.changed'
export const CHANGE_TYPES: ReadonlySet<string> = new Set<ChangeType>(['entitlement.changed', 'contract.changed', 'lifecycle.changed'])
export const BROADCAST_CHANNEL = 'govula_entitlement_changed'

/** What a tenant's entitlements are computed from: one row per tenant, read in one query. */
interface TenantState {
  plan: string
  lifecycle: Lifecycle
  trialEndsAt: number | null
  graceEndsAt: number | null
  planFeatures: Record<string, { enabled: boolean, limit: number | null }>
  contract: { features: Record<string, unknown>, startsAt: number, endsAt: number } | null
}

const STATE_SQL = `
SELECT t.plan, t.lifecycle,
       extract(epoch FROM t.trial_ends_at) * 1000 AS trial_ends_at,
       extract(epoch FROM t.grace_ends_at) * 1000 AS grace_ends_at,
       (SELECT jsonb_object_agg(pf.feature, jsonb_build_object('enabled', pf.enabled, 'limit', pf.limit_value))
          FROM plan_features pf WHERE pf.plan = t.plan) AS plan_features,
       (SELECT jsonb_build_object('features', c.features,
                 'startsAt', extract(epoch FROM c.starts_at) * 1000, 'endsAt', extract(epoch FROM c.ends_at) * 1000)
          FROM tenant_contracts c WHERE c.tenant_id = t.id) AS contract
  FROM tenants t WHERE t.id = $1`

export async function loadTenantState (client: Queryable, tenantId: string): Promise<TenantState | null> {
  const { rows: [r] } = await client.query(STATE_SQL, [tenantId])
  if (!r) return null
  const num = (v: unknown) => v === null || v === undefined ? null : Number(v)
  return {
    plan: r.plan,
    lifecycle: r.lifecycle,
    trialEndsAt: num(r.trial_ends_at),
    graceEndsAt: num(r.grace_ends_at),
    planFeatures: r.plan_features ?? {},
    contract: r.contract
      ? { features: r.contract.features, startsAt: Number(r.contract.startsAt), endsAt: Number(r.contract.endsAt) }
      : null
  }
}

/**
 * The lifecycle in force at `now`: dates take effect on time, before any job writes them.
 * A trial past its end is past due (with the grace period counted from the trial's end);
 * past due beyond the grace end is suspended. Also returns when this answer next changes.
 */
export function effectiveLifecycle (state: TenantState, now: number, graceMs: number): { lifecycle: Lifecycle, until: number } {
  let lifecycle = state.lifecycle
  let graceEnd = state.graceEndsAt
  let until = Infinity
  if (lifecycle === 'trial' && state.trialEndsAt !== null) {
    if (now >= state.trialEndsAt) {
      lifecycle = 'past_due'
      graceEnd = state.trialEndsAt + graceMs
    } else {
      until = state.trialEndsAt
    }
  }
  if (lifecycle === 'past_due' && graceEnd !== null) {
    if (now >= graceEnd) lifecycle = 'suspended'
    else until = Math.min(until, graceEnd)
  }
  return { lifecycle, until }
}

/** Pure: one feature's decision for a tenant state at `now`, and when it may next change. */
export function decide (state: TenantState, feature: string, now: number, graceMs: number): { decision: Decision, until: number } {
  const { lifecycle, until: lifecycleUntil } = effectiveLifecycle(state, now, graceMs)
  let until = lifecycleUntil
  const isBoolean = BOOLEAN_FEATURES.has(feature)

  // The base: the contract while it runs, else the plan.
  const c = state.contract
  let decision: Decision
  if (c && now >= c.startsAt && now < c.endsAt && feature in c.features) {
    until = Math.min(until, c.endsAt)
    const value = c.features[feature]
    decision = isBoolean
      ? {
          allowed: value === true,
          limit: null,
          source: 'contract',
          reason: `${value === true ? 'granted' : 'withheld'} by contract until ${new Date(c.endsAt).toISOString()}`
        }
      : {
          allowed: value === null || Number(value) > 0,
          limit: value === null ? null : Number(value),
          source: 'contract',
          reason: `set by contract until ${new Date(c.endsAt).toISOString()}`
        }
  } else {
    if (c && now < c.startsAt) until = Math.min(until, c.startsAt)
    const p = state.planFeatures[feature]
    if (!p) decision = { allowed: false, limit: isBoolean ? null : 0, source: 'plan', reason: `not included in plan ${state.plan}` }
    else if (isBoolean) {
      decision = {
        allowed: p.enabled, limit: null, source: 'plan', reason: `${p.enabled ? 'included in' : 'not included in'} plan ${state.plan}`
      }
    } else {
      const limit = p.limit === null ? null : Number(p.limit)
      decision = { allowed: p.enabled && (limit === null || limit > 0), limit, source: 'plan', reason: `plan ${state.plan}` }
    }
  }

  // The lifecycle narrows what the base grants (docs/entitlements.md).
  if (lifecycle === 'suspended' && ['recording_mode', 'seats', 'recording_events_per_minute'].includes(feature)) {
    decision = { allowed: false, limit: isBoolean ? null : 0, source: 'lifecycle', reason: 'tenant is suspended: read-only' }
  } else if (lifecycle === 'cancelled' && feature !== 'audit_export' && feature !== 'api_requests_per_minute' &&
    feature !== 'recording_retention_days') {
    decision = { allowed: false, limit: isBoolean ? null : 0, source: 'lifecycle', reason: 'tenant is cancelled: export only' }
  } else if (lifecycle === 'cancelled' && feature === 'audit_export') {
    decision = { allowed: true, limit: null, source: 'lifecycle', reason: 'tenant is cancelled: export stays available' }
  } else if (lifecycle === 'past_due' && decision.allowed) {
    decision = { ...decision, reason: `${decision.reason} (past due: grace period)` }
  }
  return { decision, until }
}

/**
 * What a tenant route may do in each lifecycle (docs/entitlements.md, "Writes"). 'read' goes on
 * in every state; 'write' changes the tenant's data and is refused while suspended (read-only)
 * or cancelled (export only); `feature:<f>` is governed by the route's requireFeature(f) gate,
 * whose decision the lifecycle already narrows (the recorder's ingest by recording_mode,
 * the audit export by audit_export).
 */
export type LifecycleRule = 'read' | 'write' | `feature:${string}`

const SAFE_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS'])

/**
 * A route's rule, decided once when it is declared. Secure by default: any method but
 * GET/HEAD/OPTIONS is a write unless the route says `lifecycle: 'read'` or is feature-gated.
 */
export function lifecycleRule (method: string, declared: unknown, gates: readonly string[]): LifecycleRule {
  if (declared !== undefined && declared !== 'read' && declared !== 'write') {
    throw new Error(`config.lifecycle is 'read' or 'write', not ${JSON.stringify(declared)}`)
  }
  if (declared) return declared
  if (SAFE_METHODS.has(method.toUpperCase())) return 'read'
  return gates.length > 0 ? `feature:${gates.join(',')}` : 'write'
}

/** Pure: whether the lifecycle in force at `now` lets the tenant change its data, and until when that holds. */
export function decideWrites (state: TenantState, now: number, graceMs: number): { decision: Decision, until: number } {
  const { lifecycle, until } = effectiveLifecycle(state, now, graceMs)
  const denied = (reason: string) => ({ decision: { allowed: false, limit: null, source: 'lifecycle' as const, reason }, until })
  if (lifecycle === 'suspended') return denied('tenant is suspended: read-only')
  if (lifecycle === 'cancelled') return denied('tenant is cancelled: export only')
  const reason = lifecycle === 'past_due' ? 'tenant is past due: writes go on for the grace period' : `tenant is ${lifecycle}`
  return { decision: { allowed: true, limit: null, source: 'lifecycle', reason }, until }
}

// The cache key of decideWrites' answer: not a feature name, so it cannot collide with one.
const WRITES_KEY = ':writes'

interface CacheEntry { decision: Decision, expiresAt: number }

/** `loads`: reads of a tenant's entitlements from Postgres (concurrent misses share one). */
export interface EngineStats { hits: number, misses: number, invalidations: number, loads: number }

export interface EngineOptions {
  db: Database
  ttlMs: number
  /** Past due lasts this long before the tenant is treated as suspended. */
  graceMs: number
  now?: () => number
}

/**
 * check(tenantId, feature) → {allowed, limit, source, reason}. ALLOW decisions are cached
 * in-process for ttlMs, but never beyond the next known boundary (contract start/end, trial
 * end, grace end), so dates take effect on time. DENY is never cached. The cache is dropped
 * per tenant on the change events, locally through `events` and, with the broadcast plugin,
 * across replicas.
 */
export function createEntitlementEngine ({ db, ttlMs, graceMs, now = Date.now }: EngineOptions) {
  const cache = new Map<string, Map<string, CacheEntry>>()
  const events = new EventEmitter()
  const stats: EngineStats = { hits: 0, misses: 0, invalidations: 0, loads: 0 }

  // A change can land while a read of the tenant is in flight, after it took its snapshot: what
  // that read found must then be neither cached nor shared. Every invalidation draws a new
  // number from one counter: a tenant's generation is the number of its latest invalidation,
  // or of the latest invalidateAll (`epoch`), which forgets the others. A read started in an
  // older generation is left out of both.
  let counter = 0
  let epoch = 0
  const generations = new Map<string, number>()
  const generation = (tenantId: string) => generations.get(tenantId) ?? epoch

  function invalidate (tenantId: string) {
    generations.set(tenantId, ++counter)
    if (cache.delete(tenantId)) stats.invalidations++
  }
  for (const type of CHANGE_TYPES) events.on(type, (change: { tenantId: string }) => invalidate(change.tenantId))

  // One read per tenant at a time: when an entry expires under load, every request that finds
  // it missing would otherwise read the same rows, each on a pooled connection of its own.
  // Only callers that hold no connection share it: one that holds one (a request's held
  // transaction) reads in it, as before. Were it to wait on a shared read that needs a
  // connection of its own, enough such callers would hold the whole pool while waiting for
  // one, and nothing would move until the checkout timed out.
  const inFlight = new Map<string, { generation: number, state: Promise<TenantState | null> }>()

  function load (tenantId: string, run?: TenantRun): { generation: number, state: Promise<TenantState | null> } {
    const current = generation(tenantId)
    // Entitlements are tenant data: read them under that tenant's row-level security.
    const reader = (c: Queryable) => loadTenantState(c, tenantId)
    if (run?.holding) {
      stats.loads++
      return { generation: current, state: run(reader) }
    }
    const shared = inFlight.get(tenantId)
    if (shared?.generation === current) return shared
    stats.loads++
    // In a transaction of its own: what it finds is answered to others and cached, so it must
    // not be any one caller's view.
    const state = db.withTenant(tenantId, reader)
    const entry = { generation: current, state }
    inFlight.set(tenantId, entry)
    const settled = () => { if (inFlight.get(tenantId) === entry) inFlight.delete(tenantId) }
    state.then(settled, settled)
    return entry
  }

  function remember (tenantId: string, feature: string, decision: Decision, until: number, at: number, readIn: number) {
    if (!decision.allowed || ttlMs <= 0 || readIn !== generation(tenantId)) return
    let perTenant = cache.get(tenantId)
    if (!perTenant) cache.set(tenantId, perTenant = new Map())
    perTenant.set(feature, { decision, expiresAt: Math.min(at + ttlMs, until) })
  }

  // A feature's decision, or (WRITES_KEY) the lifecycle's answer for writes. No closure per
  // call: a cached check is on every gated request's path.
  async function cached (tenantId: string, key: string, run?: TenantRun): Promise<Decision> {
    const at = now()
    const hit = cache.get(tenantId)?.get(key)
    if (hit && hit.expiresAt > at) {
      stats.hits++
      return hit.decision
    }
    stats.misses++
    const read = load(tenantId, run)
    const state = await read.state
    if (!state) return { allowed: false, limit: null, source: 'plan', reason: 'unknown tenant' }
    const { decision, until } = key === WRITES_KEY ? decideWrites(state, at, graceMs) : decide(state, key, at, graceMs)
    remember(tenantId, key, decision, until, at, read.generation)
    return decision
  }

  return {
    events,
    stats,

    check (tenantId: string, feature: string, run?: TenantRun): Promise<Decision> {
      return cached(tenantId, feature, run)
    },

    /** Whether the tenant may change its data now (its effective lifecycle), cached like a feature. */
    checkWrites (tenantId: string, run?: TenantRun): Promise<Decision> {
      return cached(tenantId, WRITES_KEY, run)
    },

    /** Every feature at once, computed fresh (GET /api/v1/entitlements). */
    async snapshot (tenantId: string, run?: TenantRun) {
      const at = now()
      const read = load(tenantId, run)
      const state = await read.state
      if (!state) return null
      const features: Record<string, Decision> = {}
      for (const f of FEATURES) {
        const { decision, until } = decide(state, f, at, graceMs)
        features[f] = decision
        remember(tenantId, f, decision, until, at, read.generation)
      }
      return { plan: state.plan, lifecycle: effectiveLifecycle(state, at, graceMs).lifecycle, features }
    },

    /** After a commit: drop the tenant's cache here (the broadcast plugin relays it elsewhere). */
    emitChange (type: ChangeType, tenantId: string) {
      events.emit(type, { tenantId })
    },

    invalidate,
    invalidateAll () {
      epoch = ++counter
      generations.clear()
      stats.invalidations += cache.size
      cache.clear()
    }
  }
}

export type EntitlementEngine = ReturnType<typeof createEntitlementEngine>
