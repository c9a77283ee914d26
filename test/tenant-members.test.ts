import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { test } from 'node:test'
import type { SessionEnvelope } from '../services/accounts.js'
import { adminClient, buildTestApp, createTestDatabase, testConfig } from './support/app.js'
import { bearer, login, signup, tenantStatus, uniqueEmail } from './support/actors.js'
import { assertProblem } from './support/assertions.js'

const db = await createTestDatabase()
const app = await buildTestApp(testConfig(db, { AUTH_RATE_LIMIT_MAX: 10_000, DB_MAX_CONNECTIONS: 10 }))
const admin = await adminClient(db)

type Role = 'owner' | 'admin' | 'member'
const members = (actor: SessionEnvelope) => app.inject({ url: '/api/v1/tenant/members', headers: bearer(actor) })
const add = (actor: SessionEnvelope, email: string, role: Role) =>
  app.inject({ method: 'POST', url: '/api/v1/tenant/members', headers: bearer(actor), payload: { email, role } })
const patch = (actor: SessionEnvelope, userId: string, role: Role) =>
  app.inject({ method: 'PATCH', url: `/api/v1/tenant/members/${userId}`, headers: bearer(actor), payload: { role } })
const remove = (actor: SessionEnvelope, userId: string) =>
  app.inject({ method: 'DELETE', url: `/api/v1/tenant/members/${userId}`, headers: bearer(actor) })

/** A tenant with an owner, plus users of the given roles, each with a session in it. */
async function team (...roles: Role[]) {
  const owner = await signup(app)
  // Pro's 25 seats, so that role tests are not about seats (the free plan has 3).
  await admin.query("UPDATE tenants SET plan = 'pro' WHERE id = $1", [owner.tenant!.id])
  const people: SessionEnvelope[] = []
  for (const role of roles) {
    const user = await signup(app)
    assert.equal((await add(owner, user.user.email, role)).statusCode, 201)
    const res = await login(app, { email: user.user.email, tenant: owner.tenant!.id })
    assert.equal(res.statusCode, 200, res.body)
    people.push(res.json() as SessionEnvelope)
  }
  return { owner, people }
}

test('GET /api/v1/tenant: id, name, slug, plan, lifecycle, createdAt', async () => {
  const owner = await signup(app, { tenantName: 'Tenant Fields' })
  const res = await app.inject({ url: '/api/v1/tenant', headers: bearer(owner) })
  assert.equal(res.statusCode, 200)
  const body = res.json()
  assert.deepEqual(Object.keys(body).sort(), ['createdAt', 'id', 'lifecycle', 'name', 'plan', 'slug'])
  assert.deepEqual({ id: body.id, name: body.name, slug: body.slug, plan: body.plan, lifecycle: body.lifecycle },
    { id: owner.tenant!.id, name: 'Tenant Fields', slug: 'tenant-fields', plan: 'free', lifecycle: 'trial' })
  assert.ok(Math.abs(Date.parse(body.createdAt) - Date.now()) < 60_000)
})

test('members: list, add (201, the user must exist), duplicates 409, unknown email 404', async () => {
  const owner = await signup(app)
  const alice = await signup(app)
  const res = await add(owner, alice.user.email.toUpperCase(), 'admin')
  assert.equal(res.statusCode, 201, res.body)
  assert.deepEqual(res.json(), { userId: alice.user.id, email: alice.user.email, role: 'admin' })
  const list = await members(owner)
  assert.equal(list.statusCode, 200)
  assert.deepEqual(list.json(), {
    members: [
      { userId: owner.user.id, email: owner.user.email, role: 'owner' },
      { userId: alice.user.id, email: alice.user.email, role: 'admin' }
    ]
  })
  assertProblem(await add(owner, alice.user.email, 'member'), 409, 'CONFLICT')
  assertProblem(await add(owner, uniqueEmail('nobody'), 'member'), 404, 'NOT_FOUND')
  // The new member can log into it and sees the same list.
  const inTenant = (await login(app, { email: alice.user.email, tenant: owner.tenant!.slug })).json() as SessionEnvelope
  assert.equal(inTenant.tenant!.role, 'admin')
  assert.equal((await members(inTenant)).json().members.length, 2)
})

test('role rules: members may not manage; admins manage members but not owners', async () => {
  const { owner, people: [admin1, member] } = await team('admin', 'member')
  const outsider = await signup(app)

  assertProblem(await add(member!, outsider.user.email, 'member'), 403, 'TENANT_FORBIDDEN')
  assertProblem(await patch(member!, admin1!.user.id, 'member'), 403, 'TENANT_FORBIDDEN')
  assertProblem(await remove(member!, admin1!.user.id), 403, 'TENANT_FORBIDDEN')
  assert.equal((await members(member!)).statusCode, 200, 'but may read the list')

  assertProblem(await add(admin1!, outsider.user.email, 'owner'), 403, 'TENANT_FORBIDDEN')
  assertProblem(await patch(admin1!, owner.user.id, 'member'), 403, 'TENANT_FORBIDDEN')
  assertProblem(await patch(admin1!, admin1!.user.id, 'owner'), 403, 'TENANT_FORBIDDEN')
  assertProblem(await remove(admin1!, owner.user.id), 403, 'TENANT_FORBIDDEN')

  const promoted = await patch(admin1!, member!.user.id, 'admin')
  assert.equal(promoted.statusCode, 200, promoted.body)
  assert.deepEqual(promoted.json(), { userId: member!.user.id, email: member!.user.email, role: 'admin' })
  // The new role applies on the member's very next request (it is read per request).
  assert.equal((await add(member!, outsider.user.email, 'member')).statusCode, 201)

  const made = await patch(owner, admin1!.user.id, 'owner')
  assert.equal(made.statusCode, 200)
  assert.equal(made.json().role, 'owner')
})

test('the last owner can be neither removed nor demoted (409); with two owners, one can go', async () => {
  const { owner, people: [second] } = await team('admin')
  assertProblem(await remove(owner, owner.user.id), 409, 'CONFLICT')
  assertProblem(await patch(owner, owner.user.id, 'admin'), 409, 'CONFLICT')
  assert.equal((await patch(owner, second!.user.id, 'owner')).statusCode, 200)
  assert.equal((await patch(owner, owner.user.id, 'member')).statusCode, 200, 'no longer the last owner')
  assertProblem(await patch(second!, second!.user.id, 'admin'), 409, 'CONFLICT')
  const { rows } = await admin.query("SELECT user_id FROM memberships WHERE tenant_id = $1 AND role = 'owner'", [owner.tenant!.id])
  assert.deepEqual(rows.map(r => r.user_id), [second!.user.id])
})

test('two owners removing each other at once: one succeeds, the other is refused (409 or 401), never a 500, one owner left', async () => {
  for (let round = 0; round < 3; round++) {
    const { owner, people: [other] } = await team('owner')
    const results = await Promise.all([remove(owner, other!.user.id), remove(other!, owner.user.id)])
    // The loser is refused as the last owner (409), or, removed already, no longer authenticated (401).
    const codes = results.map(r => r.statusCode).sort().join(',')
    assert.ok(codes === '204,409' || codes === '204,401', `${codes}: ${results.map(r => r.body).join(' | ')}`)
    const { rows } = await admin.query("SELECT count(*)::int AS n FROM memberships WHERE tenant_id = $1 AND role = 'owner'",
      [owner.tenant!.id])
    assert.equal(rows[0].n, 1)
  }
})

test('two owners demoting each other at once: one owner is always left, never a 500', async () => {
  for (let round = 0; round < 3; round++) {
    const { owner, people: [other] } = await team('owner')
    const results = await Promise.all([patch(owner, other!.user.id, 'member'), patch(other!, owner.user.id, 'member')])
    assert.ok(results.every(r => r.statusCode < 500), results.map(r => r.body).join(' | '))
    const { rows } = await admin.query("SELECT count(*)::int AS n FROM memberships WHERE tenant_id = $1 AND role = 'owner'",
      [owner.tenant!.id])
    assert.equal(rows[0].n, 1)
  }
})

test('another tenant\'s member id, an unknown id or a non-UUID is 404, never 403 — even for a plain member', async () => {
  const { owner, people: [member] } = await team('member')
  const foreign = await signup(app)
  for (const actor of [owner, member!]) {
    for (const id of [foreign.user.id, randomUUID(), 'not-a-uuid']) {
      assertProblem(await remove(actor, id), 404, 'NOT_FOUND')
    }
  }
  for (const id of [foreign.user.id, randomUUID()]) assertProblem(await patch(owner, id, 'admin'), 404, 'NOT_FOUND')
  assert.equal(await tenantStatus(app, foreign), 200, 'the foreign owner is untouched')
  const { rows } = await admin.query('SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $2',
    [foreign.tenant!.id, foreign.user.id])
  assert.equal(rows[0].role, 'owner')
})

test('a removed member\'s session stops working at once; a member may leave by themselves', async () => {
  const { owner, people: [gone, leaver] } = await team('member', 'member')
  assert.equal(await tenantStatus(app, gone!), 200)
  assert.equal((await remove(owner, gone!.user.id)).statusCode, 204)
  assertProblem(await app.inject({ url: '/api/v1/tenant', headers: bearer(gone!) }), 401, 'AUTH_INVALID_TOKEN')
  assertProblem(await login(app, { email: gone!.user.email, tenant: owner.tenant!.id }), 403, 'TENANT_FORBIDDEN')

  assert.equal((await remove(leaver!, leaver!.user.id)).statusCode, 204)
  assert.equal(await tenantStatus(app, leaver!), 401)
  assert.deepEqual((await members(owner)).json().members.map((m: { userId: string }) => m.userId), [owner.user.id])
})

test('member routes validate their input', async () => {
  const owner = await signup(app)
  const bad = await app.inject({
    method: 'POST', url: '/api/v1/tenant/members', headers: bearer(owner), payload: { email: 'not-an-email', role: 'member' }
  })
  assert.equal(assertProblem(bad, 400, 'VALIDATION_FAILED').errors![0]!.field, 'body.email')
  const role = await app.inject({
    method: 'POST', url: '/api/v1/tenant/members', headers: bearer(owner), payload: { email: owner.user.email, role: 'superuser' }
  })
  assert.equal(assertProblem(role, 400, 'VALIDATION_FAILED').errors![0]!.field, 'body.role')
  const extra = await app.inject({
    method: 'PATCH',
    url: `/api/v1/tenant/members/${owner.user.id}`,
    headers: bearer(owner),
    payload: { role: 'owner', tenantId: randomUUID() }
  })
  assert.equal(assertProblem(extra, 400, 'VALIDATION_FAILED').errors![0]!.field, 'body.tenantId')
})

test(
  'the plan\'s seats limit members: the free plan\'s 3rd seat is the last, concurrent adds cannot overshoot it; pro has more', async () => {
    const owner = await signup(app) // free: 3 seats
    const first = await signup(app)
    assert.equal((await add(owner, first.user.email, 'member')).statusCode, 201) // 2 of 3
    const candidates = await Promise.all([1, 2, 3, 4].map(() => signup(app)))
    // Four adds at once for the one seat left: exactly one gets it.
    const results = await Promise.all(candidates.map(c => add(owner, c.user.email, 'member')))
    assert.deepEqual(results.map(r => r.statusCode).sort(), [201, 403, 403, 403])
    const refused = results.find(r => r.statusCode === 403)!
    assertProblem(refused, 403, 'ENTITLEMENT_DENIED')
    assert.match(refused.json().detail, /seats/)
    assert.equal((await members(owner)).json().members.length, 3)
    // On pro (25 seats) the next one is welcome.
    await admin.query("UPDATE tenants SET plan = 'pro' WHERE id = $1", [owner.tenant!.id])
    app.entitlements.events.emit('entitlement.changed', { tenantId: owner.tenant!.id })
    const late = results.findIndex(r => r.statusCode === 403)
    assert.equal((await add(owner, candidates[late]!.user.email, 'member')).statusCode, 201)
  })
