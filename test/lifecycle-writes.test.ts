// Every tenant route × every lifecycle state, enumerated from the app itself: a route added
// later is part of the walk, and the walk fails until its expected answers are written below
// (and in docs/entitlements.md, "Writes").
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { test } from 'node:test'
import type { InjectOptions } from 'fastify'
import { buildApp } from '../app.js'
import type { SessionEnvelope } from '../services/accounts.js'
import { adminClient, buildTestApp, createTestDatabase, testConfig } from './support/app.js'
import { addMember, bearer, login, loginOperator, signup } from './support/actors.js'

const db = await createTestDatabase()
const app = await buildTestApp(testConfig(db, { AUTH_RATE_LIMIT_MAX: 10_000, DB_MAX_CONNECTIONS: 10 }))
const admin = await adminClient(db)
const operator = await loginOperator(app)

const asOperator = (method: 'PUT' | 'POST', url: string, payload: object) =>
  app.inject({ method, url: `/api/v1/operator/tenants/${url}`, headers: bearer(operator), payload })

/**
 * The states a tenant's writes can be judged in: the five stored lifecycles, and two that
 * dates put in force before any job writes them down.
 */
const STATES = {
  trial: { moves: [] as string[] },
  active: { moves: ['active'] },
  past_due: { moves: ['past_due'] },
  suspended: { moves: ['active', 'suspended'] },
  cancelled: { moves: ['cancelled'] },
  'trial ended (past due, in grace)': { moves: [], sql: "UPDATE tenants SET trial_ends_at = now() - interval '1 day' WHERE id = $1" },
  'past due, grace over (suspended)': {
    moves: ['past_due'], sql: "UPDATE tenants SET grace_ends_at = now() - interval '1 second' WHERE id = $1"
  }
} satisfies Record<string, { moves: string[], sql?: string }>
type State = keyof typeof STATES

interface Answer { status: number, code?: string, detail?: RegExp }
const ok = (status: number): Answer => ({ status })
const SUSPENDED: Answer = { status: 403, code: 'ENTITLEMENT_DENIED', detail: /tenant is suspended: read-only/ }
const CANCELLED: Answer = { status: 403, code: 'ENTITLEMENT_DENIED', detail: /tenant is cancelled: export only/ }
const everywhere = (answer: Answer) => Object.fromEntries(Object.keys(STATES).map(s => [s, answer])) as Record<State, Answer>
/** A write: goes on while the tenant is in trial, active or in its grace period; refused once suspended or cancelled. */
const write = (status: number): Record<State, Answer> => ({
  ...everywhere(ok(status)),
  suspended: SUSPENDED,
  'past due, grace over (suspended)': SUSPENDED,
  cancelled: CANCELLED
})

/** What one tenant holds for the walk: an owner, a member to promote, one to remove, a user to add. */
interface Subject {
  tenantId: string
  owner: SessionEnvelope
  promoted: SessionEnvelope
  leaver: SessionEnvelope
  outsider: SessionEnvelope
  recordingId: string
  checkpoint: { body: string, signature: string }
}

const event = (recordingId: string) =>
  ({ id: randomUUID(), recordingId, type: 'click', occurredAt: new Date().toISOString(), payload: { x: 1 } })

/**
 * The expected answer of every tenant route, for a tenant on the pro plan (so that its features
 * are not what decides). Keys are `METHOD url` as the route is declared.
 */
const ROUTES: Record<string, { request: (s: Subject) => Omit<InjectOptions, 'method'>, answers: Record<State, Answer> }> = {
  'GET /api/v1/tenant': { request: () => ({ url: '/api/v1/tenant' }), answers: everywhere(ok(200)) },
  'GET /api/v1/tenant/members': { request: () => ({ url: '/api/v1/tenant/members' }), answers: everywhere(ok(200)) },
  'POST /api/v1/tenant/members': {
    request: s => ({ url: '/api/v1/tenant/members', payload: { email: s.outsider.user.email, role: 'member' } }),
    answers: write(201)
  },
  // The finding: a suspended tenant's owner could still hand out the owner role.
  'PATCH /api/v1/tenant/members/:userId': {
    request: s => ({ url: `/api/v1/tenant/members/${s.promoted.user.id}`, payload: { role: 'owner' } }),
    answers: write(200)
  },
  'DELETE /api/v1/tenant/members/:userId': { request: s => ({ url: `/api/v1/tenant/members/${s.leaver.user.id}` }), answers: write(204) },
  'GET /api/v1/entitlements': { request: () => ({ url: '/api/v1/entitlements' }), answers: everywhere(ok(200)) },
  'GET /api/v1/entitlements/check': { request: () => ({ url: '/api/v1/entitlements/check?feature=seats' }), answers: everywhere(ok(200)) },
  // A POST that only reads (config.lifecycle: 'read').
  'POST /api/v1/entitlements/check': {
    request: () => ({ url: '/api/v1/entitlements/check', payload: { features: ['seats', 'audit_export'] } }), answers: everywhere(ok(200))
  },
  // Governed by its recording_mode gate, which the lifecycle narrows in the same way.
  'POST /api/v1/recordings/events': {
    request: s => ({ url: '/api/v1/recordings/events', payload: { events: [event(s.recordingId)] } }), answers: write(202)
  },
  'GET /api/v1/recordings': { request: () => ({ url: '/api/v1/recordings' }), answers: everywhere(ok(200)) },
  'GET /api/v1/recordings/:recordingId/events': {
    request: s => ({ url: `/api/v1/recordings/${s.recordingId}/events` }), answers: everywhere(ok(200))
  },
  // The export (audit_export, which a cancelled tenant keeps whatever its plan).
  'GET /api/v1/audit': { request: () => ({ url: '/api/v1/audit' }), answers: everywhere(ok(200)) },
  'GET /api/v1/audit/verify': { request: () => ({ url: '/api/v1/audit/verify' }), answers: everywhere(ok(200)) },
  'POST /api/v1/audit/verify': {
    request: s => ({ url: '/api/v1/audit/verify', payload: { checkpoints: [s.checkpoint] } }), answers: everywhere(ok(200))
  },
  'GET /api/v1/audit/checkpoint': { request: () => ({ url: '/api/v1/audit/checkpoint' }), answers: everywhere(ok(200)) }
}

/**
 * Writes that are not the tenant's: they act on the caller's account (auth 'session') or are
 * operator or public routes, and no tenant lifecycle applies to them. Listed so that a new one
 * is looked at.
 */
const NOT_TENANT_WRITES: Record<string, string> = {
  'POST /api/v1/auth/signup': 'public',
  'POST /api/v1/auth/login': 'public',
  'POST /api/v1/auth/refresh': 'public',
  'POST /api/v1/auth/logout': 'session',
  'DELETE /api/v1/auth/sessions/:id': 'session',
  'POST /api/v1/auth/password': 'session',
  'PUT /api/v1/operator/tenants/:id/plan': 'operator',
  'PUT /api/v1/operator/tenants/:id/contract': 'operator',
  'DELETE /api/v1/operator/tenants/:id/contract': 'operator',
  'POST /api/v1/operator/tenants/:id/lifecycle': 'operator',
  'POST /api/internal/cron/:job': 'public' // its own shared secret; mounted only with ENABLE_INTERNAL_CRON and CRON_SECRET
}

const SAFE = new Set(['GET', 'HEAD', 'OPTIONS'])
const authName = (auth: string | false) => auth === false ? 'public' : auth

/** Every row the tenant's routes could change, to see that a refused request changed nothing. */
async function snapshot (tenantId: string) {
  const { rows: [row] } = await admin.query(`
    SELECT (SELECT jsonb_object_agg(user_id, role) FROM memberships WHERE tenant_id = $1) AS members,
           (SELECT count(*)::int FROM recording_events WHERE tenant_id = $1) AS events,
           (SELECT count(*)::int FROM audit_log WHERE tenant_id = $1) AS audit,
           (SELECT count(*)::int FROM auth_sessions WHERE tenant_id = $1 AND revoked_at IS NULL) AS live_sessions,
           (SELECT row_to_json(t) FROM (SELECT plan, lifecycle FROM tenants WHERE id = $1) t) AS tenant`, [tenantId])
  return row as Record<string, unknown>
}

/** A pro tenant with two more members and a recording, then moved into `state`. */
async function subjectIn (state: State): Promise<Subject> {
  const owner = await signup(app)
  const tenantId = owner.tenant!.id
  assert.equal((await asOperator('PUT', `${tenantId}/plan`, { plan: 'pro' })).statusCode, 200)
  const join = async () => {
    const user = await signup(app)
    const added = await addMember(app, owner, user.user.email)
    assert.equal(added.statusCode, 201, added.body)
    const res = await login(app, { email: user.user.email, tenant: tenantId })
    assert.equal(res.statusCode, 200, res.body)
    return res.json() as SessionEnvelope
  }
  const promoted = await join()
  const leaver = await join()
  const outsider = await signup(app)
  const recordingId = `rec-${randomUUID()}`
  const stored = await app.inject({
    method: 'POST', url: '/api/v1/recordings/events', headers: bearer(owner), payload: { events: [event(recordingId)] }
  })
  assert.equal(stored.statusCode, 202, stored.body)
  const signed = await app.inject({ url: '/api/v1/audit/checkpoint', headers: bearer(owner) })
  assert.equal(signed.statusCode, 200, signed.body)
  const [cp] = signed.json().checkpoints as Array<{ body: string, signature: string }>

  const { moves, sql } = STATES[state] as { moves: string[], sql?: string }
  for (const to of moves) assert.equal((await asOperator('POST', `${tenantId}/lifecycle`, { to })).statusCode, 200, `→ ${to}`)
  if (sql) {
    // Dates move by themselves; nothing in the API sets them. The operator's (unchanged) plan
    // write stands for any change that drops this process's cache, so that the walk sees the
    // new date at once rather than after the cache's TTL.
    await admin.query(sql, [tenantId])
    assert.equal((await asOperator('PUT', `${tenantId}/plan`, { plan: 'pro' })).statusCode, 200)
  }
  return { tenantId, owner, promoted, leaver, outsider, recordingId, checkpoint: { body: cp!.body, signature: cp!.signature } }
}

test('the walk covers every route the app declares, and every tenant route has its expected answers', async () => {
  const declared = app.lifecycleRoutes.filter(r => r.method !== 'HEAD')
  const keys = new Set(declared.map(r => `${r.method} ${r.url}`))
  // The guard saw every documented operation (none was declared before it).
  const doc = (await app.inject('/docs/json')).json() as { paths: Record<string, Record<string, unknown>> }
  const documented = Object.entries(doc.paths).flatMap(([path, item]) =>
    Object.keys(item).filter(m => ['get', 'put', 'post', 'delete', 'patch'].includes(m))
      .map(m => `${m.toUpperCase()} ${path.replace(/\{(\w+)\}/g, ':$1')}`))
  assert.deepEqual(documented.filter(k => !keys.has(k)), [], 'documented operations the lifecycle guard never saw')

  const tenantRoutes = declared.filter(r => r.auth === 'tenant').map(r => `${r.method} ${r.url}`).sort()
  assert.deepEqual(tenantRoutes, Object.keys(ROUTES).sort(),
    'tenant routes and the expected-answer table differ: add the new route to ROUTES and to docs/entitlements.md')
  const otherWrites = Object.fromEntries(declared.filter(r => r.auth !== 'tenant' && !SAFE.has(r.method) && !r.url.startsWith('/docs'))
    .map(r => [`${r.method} ${r.url}`, authName(r.auth)]))
  // A subset: the cron mount exists only when a cron secret is configured.
  assert.deepEqual(Object.entries(otherWrites).filter(([key, auth]) => NOT_TENANT_WRITES[key] !== auth), [],
    'a write outside a tenant that is not in NOT_TENANT_WRITES: is it really not the tenant\'s?')
  // Secure by default: every tenant write is guarded unless it says otherwise.
  const rules = Object.fromEntries(declared.filter(r => r.auth === 'tenant' && !SAFE.has(r.method))
    .map(r => [`${r.method} ${r.url}`, r.rule]))
  assert.deepEqual(rules, {
    'POST /api/v1/tenant/members': 'write',
    'PATCH /api/v1/tenant/members/:userId': 'write',
    'DELETE /api/v1/tenant/members/:userId': 'write',
    'POST /api/v1/entitlements/check': 'read',
    'POST /api/v1/recordings/events': 'feature:recording_mode',
    'POST /api/v1/audit/verify': 'feature:audit_export'
  })
})

for (const state of Object.keys(STATES) as State[]) {
  test(`every tenant route answers as documented while the tenant is ${state}`, { timeout: 60_000 }, async () => {
    const subject = await subjectIn(state)
    const entitlements = await app.inject({ url: '/api/v1/entitlements', headers: bearer(subject.owner) })
    const wrong: string[] = []
    for (const [key, { request, answers }] of Object.entries(ROUTES)) {
      const [method] = key.split(' ') as [InjectOptions['method']]
      const expected = answers[state]
      const before = await snapshot(subject.tenantId)
      const res = await app.inject({ method, headers: bearer(subject.owner), ...request(subject) })
      const body = res.statusCode === 204 ? {} : res.json() as { code?: string, detail?: string }
      if (res.statusCode !== expected.status) {
        wrong.push(`${key}: ${res.statusCode} ${res.body.slice(0, 200)}, expected ${expected.status} ${expected.code ?? ''}`)
      } else if (expected.code && body.code !== expected.code) {
        wrong.push(`${key}: code ${body.code}, expected ${expected.code}`)
      } else if (expected.detail && !expected.detail.test(body.detail ?? '')) {
        wrong.push(`${key}: detail ${body.detail}, expected ${expected.detail}`)
      }
      // A refused request, or a read, changed nothing the tenant holds.
      if (expected.status >= 400 || method === 'GET' || key === 'POST /api/v1/entitlements/check' || key === 'POST /api/v1/audit/verify') {
        const after = await snapshot(subject.tenantId)
        try {
          assert.deepEqual(after, before)
        } catch {
          wrong.push(`${key} (${res.statusCode}) changed ${JSON.stringify(before)} → ${JSON.stringify(after)}`)
        }
      }
    }
    assert.deepEqual(wrong, [], `effective lifecycle ${entitlements.json().lifecycle}`)

    // The refused role change above left the role as it was; an allowed one took effect.
    const { rows: [role] } = await admin.query('SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $2',
      [subject.tenantId, subject.promoted.user.id])
    assert.equal(role.role, ROUTES['PATCH /api/v1/tenant/members/:userId']!.answers[state].status === 200 ? 'owner' : 'member')
    // The account's own writes are not the tenant's: a suspended or cancelled tenant's member can still log out.
    const logout = await app.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(subject.leaver) })
    assert.ok([204, 401].includes(logout.statusCode), `logout: ${logout.statusCode} ${logout.body}`)
    if (ROUTES['DELETE /api/v1/tenant/members/:userId']!.answers[state].status !== 204) {
      assert.equal(logout.statusCode, 204, 'still a member, so the session was live')
    }
  })
}

test('the write check is served from the entitlement cache: a warm write reads nothing more', async () => {
  const subject = await subjectIn('active')
  const promote = (role: string) => app.inject({
    method: 'PATCH', url: `/api/v1/tenant/members/${subject.promoted.user.id}`, headers: bearer(subject.owner), payload: { role }
  })
  assert.equal((await promote('admin')).statusCode, 200)
  const loads = app.entitlements.stats.loads
  const hits = app.entitlements.stats.hits
  assert.equal((await promote('member')).statusCode, 200)
  assert.equal(app.entitlements.stats.loads, loads, 'no read of the tenant\'s state')
  assert.ok(app.entitlements.stats.hits > hits)
})

test('a refusal is never cached: a suspended tenant that is reactivated writes at once', async () => {
  const subject = await subjectIn('suspended')
  const promote = () => app.inject({
    method: 'PATCH', url: `/api/v1/tenant/members/${subject.promoted.user.id}`, headers: bearer(subject.owner), payload: { role: 'admin' }
  })
  const refused = await promote()
  assert.equal(refused.statusCode, 403)
  assert.equal(refused.json().detail, 'tenant is suspended: read-only')
  assert.equal((await asOperator('POST', `${subject.tenantId}/lifecycle`, { to: 'active' })).statusCode, 200)
  assert.equal((await promote()).statusCode, 200)
  // And back: the cached ALLOW is dropped by the change, so the suspension holds at once.
  assert.equal((await asOperator('POST', `${subject.tenantId}/lifecycle`, { to: 'suspended' })).statusCode, 200)
  assert.equal((await promote()).statusCode, 403)
})

test('leaving a suspended tenant is a tenant write too: refused, the membership stays', async () => {
  const subject = await subjectIn('suspended')
  const leave = await app.inject({
    method: 'DELETE', url: `/api/v1/tenant/members/${subject.leaver.user.id}`, headers: bearer(subject.leaver)
  })
  assert.equal(leave.statusCode, 403)
  assert.equal(leave.json().code, 'ENTITLEMENT_DENIED')
  const { rowCount } = await admin.query('SELECT 1 FROM memberships WHERE tenant_id = $1 AND user_id = $2',
    [subject.tenantId, subject.leaver.user.id])
  assert.equal(rowCount, 1)
})

test('a route declaring an unknown lifecycle rule is refused at startup', async () => {
  const odd = await buildApp(testConfig(db))
  try {
    assert.throws(() => odd.post('/test/odd', { config: { lifecycle: 'sometimes' as 'read' } }, async () => ({})),
      /POST \/test\/odd: config\.lifecycle is 'read' or 'write'/)
  } finally {
    await odd.close()
  }
})
