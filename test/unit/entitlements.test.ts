import assert from 'node:assert/strict'
import { test } from 'node:test'
import {
  BOOLEAN_FEATURES, decide, decideWrites, effectiveLifecycle, FEATURES, LIFECYCLES, lifecycleRule, TRANSITIONS, type Lifecycle
} from '../../services/entitlements.js'

// The entitlement decision is a pure function of the tenant's state and the clock: every
// rule of docs/entitlements.md is checked here against a fixed `now`, no Postgres involved.
type State = Parameters<typeof decide>[0]

const DAY = 86_400_000
const GRACE = 7 * DAY
const NOW = Date.parse('2025-06-01T12:00:00.000Z')

function state (over: Partial<State> = {}): State {
  return {
    plan: 'pro',
    lifecycle: 'active',
    trialEndsAt: null,
    graceEndsAt: null,
    planFeatures: {
      recording_mode: { enabled: true, limit: null },
      audit_export: { enabled: false, limit: null },
      seats: { enabled: true, limit: 5 },
      api_requests_per_minute: { enabled: true, limit: 600 },
      recording_events_per_minute: { enabled: true, limit: 0 },
      recording_retention_days: { enabled: true, limit: null }
    },
    contract: null,
    ...over
  }
}

const at = (s: State, feature: string, now = NOW) => decide(s, feature, now, GRACE)

test('the plan decides when nothing else applies: booleans, limits, unlimited, zero, missing features', () => {
  const s = state()
  assert.deepEqual(at(s, 'recording_mode'),
    { decision: { allowed: true, limit: null, source: 'plan', reason: 'included in plan pro' }, until: Infinity })
  assert.deepEqual(at(s, 'audit_export').decision, { allowed: false, limit: null, source: 'plan', reason: 'not included in plan pro' })
  assert.deepEqual(at(s, 'seats').decision, { allowed: true, limit: 5, source: 'plan', reason: 'plan pro' })
  assert.deepEqual(at(s, 'recording_retention_days').decision, { allowed: true, limit: null, source: 'plan', reason: 'plan pro' },
    'a null limit is unlimited')
  assert.deepEqual(at(s, 'recording_events_per_minute').decision, { allowed: false, limit: 0, source: 'plan', reason: 'plan pro' },
    'a zero limit denies')

  const disabled = state({ planFeatures: { seats: { enabled: false, limit: 5 } } })
  assert.equal(at(disabled, 'seats').decision.allowed, false, 'a disabled numeric feature is denied whatever its limit')

  const bare = state({ planFeatures: {} })
  assert.deepEqual(at(bare, 'seats').decision, { allowed: false, limit: 0, source: 'plan', reason: 'not included in plan pro' })
  assert.deepEqual(at(bare, 'audit_export').decision, { allowed: false, limit: null, source: 'plan', reason: 'not included in plan pro' })
  assert.deepEqual(at(s, 'teleport').decision, { allowed: false, limit: 0, source: 'plan', reason: 'not included in plan pro' },
    'an unknown feature is never granted')
})

test('a running contract overrides the plan, both ways, from its start (inclusive) to its end (exclusive)', () => {
  const startsAt = NOW - DAY
  const endsAt = NOW + 30 * DAY
  const contract = {
    startsAt,
    endsAt,
    features: { audit_export: true, recording_mode: false, seats: 50, api_requests_per_minute: null, recording_retention_days: 0 }
  }
  const s = state({ contract })
  const until = new Date(endsAt).toISOString()

  assert.deepEqual(at(s, 'audit_export'),
    { decision: { allowed: true, limit: null, source: 'contract', reason: `granted by contract until ${until}` }, until: endsAt })
  assert.deepEqual(at(s, 'recording_mode').decision,
    { allowed: false, limit: null, source: 'contract', reason: `withheld by contract until ${until}` }, 'a contract can take away')
  assert.deepEqual(at(s, 'seats').decision, { allowed: true, limit: 50, source: 'contract', reason: `set by contract until ${until}` })
  assert.deepEqual(at(s, 'api_requests_per_minute').decision,
    { allowed: true, limit: null, source: 'contract', reason: `set by contract until ${until}` }, 'null: unlimited')
  assert.deepEqual(at(s, 'recording_retention_days').decision,
    { allowed: false, limit: 0, source: 'contract', reason: `set by contract until ${until}` })
  assert.deepEqual(at(s, 'recording_events_per_minute'), { decision: at(state(), 'recording_events_per_minute').decision, until: Infinity },
    'a feature the contract does not name stays the plan\'s')

  const truthy = state({ contract: { ...contract, features: { audit_export: 'yes' } } })
  assert.equal(at(truthy, 'audit_export').decision.allowed, false, 'only true grants a boolean feature')

  assert.equal(at(s, 'seats', startsAt).decision.source, 'contract', 'in force at its first millisecond')
  assert.equal(at(s, 'seats', endsAt - 1).decision.source, 'contract')
  assert.deepEqual(at(s, 'seats', endsAt), { decision: at(state(), 'seats').decision, until: Infinity }, 'over at its end')

  const before = at(s, 'seats', startsAt - 1000)
  assert.deepEqual(before, { decision: at(state(), 'seats').decision, until: startsAt }, 'before it starts: the plan, until the start')
})

test('effective lifecycle: dates take effect on time, before any job writes them', () => {
  const trialEndsAt = NOW + DAY
  const trial = state({ lifecycle: 'trial', trialEndsAt, graceEndsAt: NOW - 100 * DAY })
  assert.deepEqual(effectiveLifecycle(trial, NOW, GRACE), { lifecycle: 'trial', until: trialEndsAt })
  assert.deepEqual(effectiveLifecycle(trial, trialEndsAt, GRACE), { lifecycle: 'past_due', until: trialEndsAt + GRACE },
    'a trial past its end is past due, its grace counted from the trial\'s end (not the stored grace end)')
  assert.deepEqual(effectiveLifecycle(trial, trialEndsAt + GRACE - 1, GRACE), { lifecycle: 'past_due', until: trialEndsAt + GRACE })
  assert.deepEqual(effectiveLifecycle(trial, trialEndsAt + GRACE, GRACE), { lifecycle: 'suspended', until: Infinity })
  assert.deepEqual(effectiveLifecycle(state({ lifecycle: 'trial' }), NOW, GRACE), { lifecycle: 'trial', until: Infinity },
    'a trial without an end lasts')

  const pastDue = state({ lifecycle: 'past_due', graceEndsAt: NOW + 1000 })
  assert.deepEqual(effectiveLifecycle(pastDue, NOW, GRACE), { lifecycle: 'past_due', until: NOW + 1000 })
  assert.deepEqual(effectiveLifecycle(pastDue, NOW + 1000, GRACE), { lifecycle: 'suspended', until: Infinity })
  assert.deepEqual(effectiveLifecycle(state({ lifecycle: 'past_due' }), NOW, GRACE), { lifecycle: 'past_due', until: Infinity })

  for (const lifecycle of ['active', 'suspended', 'cancelled'] as const) {
    assert.deepEqual(effectiveLifecycle(state({ lifecycle, trialEndsAt: NOW - DAY, graceEndsAt: NOW - DAY }), NOW, GRACE),
      { lifecycle, until: Infinity }, `${lifecycle} ignores trial and grace dates`)
  }
})

test('suspended is read-only: recording, seats and ingest are refused; export, API budget and retention stay the base\'s', () => {
  const base = state({ contract: { startsAt: NOW - DAY, endsAt: NOW + DAY, features: { recording_mode: true, audit_export: true } } })
  const s = { ...base, lifecycle: 'suspended' as const }
  const refused = { source: 'lifecycle', reason: 'tenant is suspended: read-only' }
  assert.deepEqual(at(s, 'recording_mode').decision, { allowed: false, limit: null, ...refused }, 'even when a contract grants it')
  assert.deepEqual(at(s, 'seats').decision, { allowed: false, limit: 0, ...refused })
  assert.deepEqual(at(s, 'recording_events_per_minute').decision, { allowed: false, limit: 0, ...refused })
  for (const f of ['audit_export', 'api_requests_per_minute', 'recording_retention_days']) {
    assert.deepEqual(at(s, f), at(base, f), `${f} is not narrowed`)
  }
})

test('cancelled is export only: export is granted even if the plan lacks it; API budget and retention stay; all else refused', () => {
  const s = state({ lifecycle: 'cancelled' })
  assert.deepEqual(at(s, 'audit_export').decision,
    { allowed: true, limit: null, source: 'lifecycle', reason: 'tenant is cancelled: export stays available' })
  assert.equal(at(state(), 'audit_export').decision.allowed, false, 'the plan alone withholds it')
  for (const f of ['recording_mode', 'seats', 'recording_events_per_minute']) {
    const { decision } = at(s, f)
    assert.equal(decision.allowed, false, f)
    assert.equal(decision.source, 'lifecycle', f)
    assert.equal(decision.reason, 'tenant is cancelled: export only', f)
  }
  assert.deepEqual(at(s, 'api_requests_per_minute').decision, at(state(), 'api_requests_per_minute').decision)
  assert.deepEqual(at(s, 'recording_retention_days').decision, at(state(), 'recording_retention_days').decision)
})

test('past due keeps what the base grants during the grace period and says so; a denial is left as it is', () => {
  const s = state({ lifecycle: 'past_due', graceEndsAt: NOW + DAY })
  assert.deepEqual(at(s, 'seats'),
    { decision: { allowed: true, limit: 5, source: 'plan', reason: 'plan pro (past due: grace period)' }, until: NOW + DAY })
  assert.deepEqual(at(s, 'audit_export').decision, at(state(), 'audit_export').decision)
  assert.equal(at(s, 'seats', NOW + DAY).decision.reason, 'tenant is suspended: read-only', 'the grace end suspends on time')
})

test('the next change is the earliest boundary: trial end, grace end, contract start or end', () => {
  const contract = { startsAt: NOW - DAY, endsAt: NOW + 10 * DAY, features: { seats: 9 } }
  assert.equal(at(state({ lifecycle: 'trial', trialEndsAt: NOW + DAY, contract }), 'seats').until, NOW + DAY)
  assert.equal(at(state({ lifecycle: 'trial', trialEndsAt: NOW + 20 * DAY, contract }), 'seats').until, NOW + 10 * DAY)
  const pending = { ...contract, startsAt: NOW + 2 * DAY }
  assert.equal(at(state({ lifecycle: 'past_due', graceEndsAt: NOW + 3 * DAY, contract: pending }), 'seats').until, NOW + 2 * DAY)
  assert.equal(at(state({ lifecycle: 'past_due', graceEndsAt: NOW + DAY, contract: pending }), 'seats').until, NOW + DAY)
})

test('the lifecycle matrix: which features each lifecycle refuses (limit 0, or null for a boolean)', () => {
  const refusedBy: Record<Lifecycle, string[]> = {
    trial: [],
    active: [],
    past_due: [],
    suspended: ['recording_mode', 'seats', 'recording_events_per_minute'],
    cancelled: ['recording_mode', 'seats', 'recording_events_per_minute']
  }
  for (const lifecycle of LIFECYCLES) {
    const s = state({ lifecycle, trialEndsAt: NOW + DAY, graceEndsAt: NOW + DAY })
    const refused = FEATURES.filter(f => {
      const { decision } = at(s, f)
      if (decision.source !== 'lifecycle' || decision.allowed) return false
      assert.equal(decision.limit, BOOLEAN_FEATURES.has(f) ? null : 0, `${lifecycle}/${f}`)
      return true
    })
    assert.deepEqual(refused, refusedBy[lifecycle], lifecycle)
  }
})

test('writes: allowed while trial, active or past due (grace); refused once suspended or cancelled, on time', () => {
  const allowed = (reason: string) => ({ allowed: true, limit: null, source: 'lifecycle', reason })
  const denied = (reason: string) => ({ allowed: false, limit: null, source: 'lifecycle', reason })
  assert.deepEqual(decideWrites(state(), NOW, GRACE), { decision: allowed('tenant is active'), until: Infinity })
  assert.deepEqual(decideWrites(state({ lifecycle: 'trial', trialEndsAt: NOW + DAY }), NOW, GRACE),
    { decision: allowed('tenant is trial'), until: NOW + DAY })
  assert.deepEqual(decideWrites(state({ lifecycle: 'past_due', graceEndsAt: NOW + DAY }), NOW, GRACE),
    { decision: allowed('tenant is past due: writes go on for the grace period'), until: NOW + DAY })
  assert.deepEqual(decideWrites(state({ lifecycle: 'suspended' }), NOW, GRACE),
    { decision: denied('tenant is suspended: read-only'), until: Infinity })
  assert.deepEqual(decideWrites(state({ lifecycle: 'cancelled' }), NOW, GRACE),
    { decision: denied('tenant is cancelled: export only'), until: Infinity })

  const trialEnded = state({ lifecycle: 'trial', trialEndsAt: NOW - DAY })
  assert.equal(decideWrites(trialEnded, NOW, GRACE).decision.allowed, true, 'within the grace after the trial')
  assert.deepEqual(decideWrites(trialEnded, NOW - DAY + GRACE, GRACE).decision, denied('tenant is suspended: read-only'))
})

test('lifecycleRule: safe methods read, other methods write unless declared read or feature-gated; bad declarations throw', () => {
  for (const method of ['GET', 'head', 'Options']) assert.equal(lifecycleRule(method, undefined, []), 'read', method)
  for (const method of ['POST', 'PUT', 'PATCH', 'DELETE', 'post']) assert.equal(lifecycleRule(method, undefined, []), 'write', method)
  assert.equal(lifecycleRule('POST', undefined, ['recording_mode']), 'feature:recording_mode')
  assert.equal(lifecycleRule('POST', undefined, ['recording_mode', 'audit_export']), 'feature:recording_mode,audit_export')
  assert.equal(lifecycleRule('GET', undefined, ['audit_export']), 'read', 'a gated read is still a read')
  assert.equal(lifecycleRule('POST', 'read', ['recording_mode']), 'read', 'a declaration wins over a gate')
  assert.equal(lifecycleRule('GET', 'write', []), 'write', 'a GET can be declared a write')
  for (const bad of ['readonly', 'READ', '', null, true, 0]) {
    assert.throws(() => lifecycleRule('POST', bad, []), /config\.lifecycle is 'read' or 'write'/, JSON.stringify(bad))
  }
})

test('lifecycle transitions: cancelled is final, none loops, a trial is never suspended without passing through past due', () => {
  assert.deepEqual(TRANSITIONS.cancelled, [])
  for (const from of LIFECYCLES) {
    assert.ok(!TRANSITIONS[from].includes(from), `${from} does not transition to itself`)
    for (const to of TRANSITIONS[from]) assert.ok((LIFECYCLES as readonly Lifecycle[]).includes(to))
    if (from !== 'cancelled') assert.ok(TRANSITIONS[from].includes('cancelled'), `${from} can be cancelled`)
  }
  assert.ok(!TRANSITIONS.trial.includes('suspended'))
  assert.ok(TRANSITIONS.suspended.includes('active'), 'a suspended tenant can be reactivated')
})
