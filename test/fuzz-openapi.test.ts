// Bad input at scale. Requests are generated from the OpenAPI document, for
// every operation, as two tenants (an owner and a member of A, the owner of B), an operator,
// the cron caller and callers with no or broken credentials. Half are valid as far as the
// schema can say, half are broken on purpose. Every response must be documented for its
// status and match its schema, every 4xx must be a registry problem, nothing may be a 5xx,
// input broken on purpose must get a 4xx, and no tenant ever sees the other's data.
//
// Reproduce a failure with the seed this file prints: FUZZ_SEED=<seed> (and FUZZ_RUNS=<runs>
// for more requests per operation). Each operation runs its own property with seed + index.
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { test } from 'node:test'
import fc from 'fast-check'
import type { SessionEnvelope } from '../services/accounts.js'
import { adminClient, buildTestApp, createTestDatabase, testConfig } from './support/app.js'
import { addMember, bearer, login, loginOperator, PASSWORD, signup, uniqueEmail } from './support/actors.js'
import {
  mutate, operationsOf, render, requestJudge, responseJudge, valueFor, type Hints, type Operation, type Parts
} from './support/openapi-fuzz.js'

const db = await createTestDatabase()
const admin = await adminClient(db)

const SEED = Number(process.env.FUZZ_SEED ?? 20_251_128)
const RUNS = Number(process.env.FUZZ_RUNS ?? 60)
const CRON_SECRET = 'fuzz-cron-secret'
// The marker tenants' users have a password the generators never send, so a generated login
// never hands one of them a session; the spare users share actors.ts's PASSWORD.
const OWNER_PASSWORD = 'zqx owner password 1'

// Every call of these costs an argon2 hash (or a login for a fresh session): fewer runs keep the file bounded.
const HEAVY = new Set(['POST /api/v1/auth/signup', 'POST /api/v1/auth/login', 'POST /api/v1/auth/logout', 'POST /api/v1/auth/password'])

type App = Awaited<ReturnType<typeof buildTestApp>>
type Inject = Awaited<ReturnType<App['inject']>>

// Limits far above what the run sends: a 429 would hide the route behind it. 429 stays an
// acceptable answer (it is a registry problem), it just should not be the only one.
const app = await buildTestApp(testConfig(db, {
  RATE_LIMIT_MAX: 1_000_000,
  AUTH_RATE_LIMIT_MAX: 1_000_000,
  AUTH_RATE_LIMIT_FALLBACK_MAX: 1_000_000,
  LOGIN_MAX_FAILURES_PER_HOUR: 1_000_000,
  ENABLE_INTERNAL_CRON: true,
  CRON_SECRET,
  DB_MAX_CONNECTIONS: 10
}))
const config = app.config

async function ok (res: Promise<Inject>, status: number) {
  const r = await res
  assert.equal(r.statusCode, status, r.body)
  return r.json()
}

/** A tenant with distinctive data: members, recordings with events, audit entries, spare sessions and checkpoints. */
async function markerTenant (tag: 'a' | 'b', operator: SessionEnvelope, spareUsers: SessionEnvelope[]) {
  const marker = `zqxmark${tag}`
  const owner = await signup(app, { email: `${marker}-owner@example.test`, password: OWNER_PASSWORD, tenantName: `${marker} Tenant` })
  const tenantId = owner.tenant!.id
  await ok(app.inject({
    method: 'PUT', url: `/api/v1/operator/tenants/${tenantId}/plan`, headers: bearer(operator), payload: { plan: 'enterprise' }
  }), 200)

  const memberHome = await signup(app, { email: `${marker}-member@example.test`, password: OWNER_PASSWORD, tenantName: 'Member home' })
  await ok(addMember(app, owner, memberHome.user.email), 201)
  const member = await ok(login(app, { email: memberHome.user.email, password: OWNER_PASSWORD, tenant: tenantId }), 200) as SessionEnvelope
  for (const spare of spareUsers) {
    await ok(addMember(app, owner, spare.user.email, 'admin'), 201)
  }
  // Sessions of the owner that the fuzzer may revoke or refresh: never the one it calls with.
  const spares: SessionEnvelope[] = []
  for (let i = 0; i < 3; i++) spares.push(await ok(login(app, { email: owner.user.email, password: OWNER_PASSWORD }), 200))

  const recordingIds = [1, 2, 3].map(i => `${marker}-rec-${i}`)
  const events = recordingIds.flatMap((recordingId, r) => [0, 1].map(i => ({
    id: randomUUID(),
    recordingId,
    type: `${marker}.click`,
    occurredAt: new Date(Date.now() - (r * 2 + i) * 1000).toISOString(),
    payload: { secret: `${marker}-payload`, i }
  })))
  await ok(app.inject({ method: 'POST', url: '/api/v1/recordings/events', headers: bearer(owner), payload: { events } }), 202)
  const listCursor = (await ok(app.inject({ url: '/api/v1/recordings?limit=1', headers: bearer(owner) }), 200)).nextCursor as string
  const eventCursor = (await ok(app.inject({ url: `/api/v1/recordings/${recordingIds[0]}/events?limit=1`, headers: bearer(owner) }), 200))
    .nextCursor as string
  const checkpoints = (await ok(app.inject({ url: '/api/v1/audit/checkpoint', headers: bearer(owner) }), 200))
    .checkpoints as Array<{ body: string, signature: string }>
  assert.ok(listCursor && eventCursor && checkpoints.length > 0)

  const sessions = [owner, member, ...spares].map(s => s.session.id)
  return {
    tag,
    owner,
    member,
    spares,
    tenantId,
    slug: owner.tenant!.slug,
    recordingIds,
    eventIds: events.map(e => e.id),
    storedEvents: new Set<string>(events.map(e => e.id)),
    cursors: { list: listCursor, events: eventCursor },
    checkpoints: checkpoints.map(c => ({ body: c.body, signature: c.signature })),
    /** Ids only this tenant's callers may act on. */
    ownIds: new Set([owner.user.id, member.user.id, ...sessions, ...recordingIds]),
    /** What must never appear in an answer to anyone without this tenant's credentials. */
    markers: [marker, tenantId, owner.user.id, member.user.id, ...sessions, ...events.map(e => e.id),
      ...[owner, member, ...spares].flatMap(s => [s.accessToken, s.refreshToken]), ...checkpoints.map(c => c.signature)]
  }
}

// ---------------------------------------------------------------------------------------------
// The world

const operator = await loginOperator(app)
const spareUsers: SessionEnvelope[] = []
for (let i = 0; i < 4; i++) spareUsers.push(await signup(app, { email: uniqueEmail('spare'), tenantName: `Spare ${i}` }))
const A = await markerTenant('a', operator, [spareUsers[0]!])
const B = await markerTenant('b', operator, [spareUsers[1]!])
// The operator's routes change plans, contracts and lifecycles: only on this tenant, so that
// A and B keep the features the fuzzer reaches their routes with.
const C = await signup(app, { email: uniqueEmail('opsubject'), tenantName: 'Operator subject' })
const jobs = app.jobRunner.names()
type World = typeof A

interface Caller {
  name: string
  headers: (g: fc.GeneratorValue) => Promise<Record<string, string>>
  /** Whose data this caller may see: null for no tenant's. */
  tenant: World | null
  /** An operator sees every tenant's data. */
  seesAll?: boolean
}

const JUNK_AUTH = [
  'Bearer garbage', `Bearer ${'x'.repeat(5000)}`, 'Basic dXNlcjpwYXNz', 'Bearer', 'Bearer a b', `Bearer ${A.owner.accessToken}x`,
  `Bearer ${B.owner.refreshToken}`, `Bearer ${randomUUID()}`, 'Bearer \u00e9\u00e9'
]
const callers: Record<string, Caller> = {
  A: { name: 'A owner', tenant: A, headers: async () => bearer(A.owner) },
  AM: { name: 'A member', tenant: A, headers: async () => bearer(A.member) },
  B: { name: 'B owner', tenant: B, headers: async () => bearer(B.owner) },
  operator: { name: 'operator', tenant: null, seesAll: true, headers: async () => bearer(operator) },
  anonymous: { name: 'anonymous', tenant: null, headers: async () => ({}) },
  junk: { name: 'broken credentials', tenant: null, headers: async (g) => ({ authorization: g(fc.constantFrom, ...JUNK_AUTH) }) },
  cron: { name: 'cron', tenant: null, headers: async () => ({ authorization: `Bearer ${CRON_SECRET}` }) },
  // Logout ends the session it is called with: each call gets a session of its own.
  freshA: {
    name: 'A owner, fresh session',
    tenant: A,
    headers: async () => bearer(await ok(login(app, { email: A.owner.user.email, password: OWNER_PASSWORD }), 200) as SessionEnvelope)
  }
}

/** Who calls an operation (names of `callers`, repeated for weight). Never a caller the operation would end or demote. */
function callersFor (op: Operation): string[] {
  if (op.key === 'POST /api/v1/auth/logout') return ['freshA', 'anonymous', 'junk']
  if (op.key === 'POST /api/internal/cron/{job}') return ['cron', 'cron', 'A', 'anonymous', 'junk']
  if (op.path.startsWith('/api/v1/operator/')) return ['operator', 'operator', 'operator', 'A', 'B', 'anonymous', 'junk']
  return ['A', 'A', 'AM', 'B', 'B', 'operator', 'anonymous', 'junk']
}

const pick = <T>(...values: T[]) => fc.constantFrom(...values)
const other = (w: World | null) => w === A ? B : w === B ? A : null

/** Meaningful values per field: existing rows of the caller's tenant, the other tenant's ids, spare users. */
function hintsFor (op: Operation, caller: Caller): Hints {
  const mine = caller.tenant
  const theirs = other(mine)
  const both = [A, B]
  const local = mine ? [mine] : both
  return (where) => {
    switch (`${op.path} ${where}`) {
      case '/api/v1/auth/sessions/{id} params.id':
        // Spare sessions only: the callers' own stay alive.
        return pick(
          ...both.flatMap(w => w.spares.map(s => s.session.id)),
          ...(theirs ? [theirs.owner.session.id, theirs.member.session.id] : []))
      case '/api/v1/tenant/members/{userId} params.userId':
        return pick(...spareUsers.map(s => s.user.id), ...(theirs ? [theirs.owner.user.id, theirs.member.user.id] : []))
      case '/api/v1/tenant/members body.email':
        return pick(...spareUsers.map(s => s.user.email), ...local.map(w => w.member.user.email))
      case '/api/v1/recordings/{recordingId}/events params.recordingId':
        return pick(...both.flatMap(w => w.recordingIds))
      case '/api/v1/recordings/events body.events.*.recordingId':
        return pick(...local.flatMap(w => w.recordingIds))
      case '/api/v1/recordings/events body.events.*.id':
        return pick(...both.flatMap(w => w.eventIds), `urn:uuid:${randomUUID()}`)
      case '/api/v1/recordings query.cursor':
        return pick(...both.map(w => w.cursors.list))
      case '/api/v1/recordings/{recordingId}/events query.cursor':
        return pick(...both.flatMap(w => [w.cursors.events, w.cursors.list]))
      case '/api/v1/audit/verify body.checkpoints.*':
        return pick(...both.flatMap(w => w.checkpoints))
      case '/api/v1/audit query.action':
      case '/api/v1/operator/audit/events query.action':
        return pick('member.added', 'auth.login', 'auth.signup', 'operator.login', 'tenant.plan_changed')
      case '/api/v1/auth/login body.email':
      case '/api/v1/auth/signup body.email':
        return pick(...spareUsers.map(s => s.user.email), A.owner.user.email, B.member.user.email, operator.user.email)
      case '/api/v1/auth/login body':
        // Whole sign-ins that succeed, unless the fuzzer has since added the user to A or B
        // (then `tenant` decides): without them the route would rarely answer 200.
        return fc.record({ email: pick(...spareUsers.slice(2).map(s => s.user.email)), password: fc.constant(PASSWORD) })
      case '/api/v1/auth/signup body':
        return fc.uuid().map(u => ({ email: `fuzz-${u}@example.test`, password: PASSWORD, tenantName: `Fuzz ${u.slice(0, 8)}` }))
      case '/api/v1/operator/tenants/{id}/contract body':
        return fc.record({
          features: fc.record({ seats: fc.oneof(fc.nat(100), fc.constant(null)), recording_mode: fc.boolean() }, { requiredKeys: [] })
            .filter(f => Object.keys(f).length > 0),
          startsAt: fc.constant(new Date(Date.now() - 86_400_000).toISOString()),
          endsAt: fc.constant(new Date(Date.now() + 86_400_000).toISOString())
        })
      case '/api/v1/audit/verify body':
        return mine ? fc.subarray(mine.checkpoints, { minLength: 1 }).map(checkpoints => ({ checkpoints })) : undefined
      case '/api/v1/auth/login body.password':
        return pick(PASSWORD)
      case '/api/v1/auth/login body.tenant':
        return pick(...spareUsers.flatMap(s => [s.tenant!.slug, s.tenant!.id]), A.slug, B.tenantId)
      case '/api/v1/auth/refresh body.refreshToken':
        return pick(...both.flatMap(w => w.spares.map(s => s.refreshToken)))
      case '/api/v1/operator/tenants/{id}/plan params.id':
      case '/api/v1/operator/tenants/{id}/contract params.id':
      case '/api/v1/operator/tenants/{id}/lifecycle params.id':
        return pick(C.tenant!.id)
      case '/api/v1/operator/tenants query.cursor':
        return pick(A.tenantId, B.tenantId, C.tenant!.id)
      case '/api/v1/operator/jobs query.job':
      case '/api/internal/cron/{job} params.job':
        return pick(...jobs)
      default:
        return undefined
    }
  }
}

/** A request the schema would accept, mostly: values from the schemas and the hints. */
function validish (g: fc.GeneratorValue, op: Operation, hints: Hints): Parts {
  const params: Record<string, string> = {}
  for (const p of op.params) params[p.name] = String(g(() => valueFor(p.schema, hints, `params.${p.name}`)))
  const query: Record<string, string> = {}
  for (const q of op.query) {
    if (q.required ? g(fc.nat, 9) === 0 : g(fc.boolean)) continue // a default may stand in for a required one
    query[q.name] = String(g(() => valueFor(q.schema, hints, `query.${q.name}`)))
  }
  return op.body ? { params, query, body: g(() => valueFor(op.body!, hints, 'body')) } : { params, query }
}

// Headers the service reads besides Authorization. HTTP carries no control characters in a
// header (Node's parser refuses them before any route), so the values are printable ASCII.
const printable = (maxLength: number) => fc.string({ unit: 'binary-ascii', maxLength }).filter(v => /^[\x20-\x7e]*$/.test(v))
const etag = String((await app.inject('/recorder.js')).headers.etag)
const extraHeaders = fc.record({
  'x-request-id': fc.oneof(fc.stringMatching(/^[\w.:-]{1,64}$/), printable(100)),
  'user-agent': printable(300),
  'if-none-match': fc.oneof(fc.constant(etag), fc.constant(`W/${etag}, "x"`), fc.constant('*'), printable(60))
}, { requiredKeys: [] })

// ---------------------------------------------------------------------------------------------
// What is checked beyond the document

const lower = (s: string) => s.toLowerCase()

/** The other tenant's markers in a response, except those the request itself carried (an echoed input is no leak). */
function leaks (caller: Caller, request: string, body: string) {
  if (caller.seesAll) return []
  const sent = lower(request)
  const text = lower(body)
  const forbidden = [A, B].filter(w => w !== caller.tenant)
  // Holding a tenant's token (a refresh token in a body) is holding its data.
  const holds = (w: World) => w.markers.some(m => m.length > 40 && sent.includes(lower(m)))
  // Event ids are chosen by clients: one the caller's tenant stored too is its own as well.
  const shared = (m: string) => caller.tenant?.storedEvents.has(lower(m)) === true
  return forbidden.filter(w => !holds(w))
    .flatMap(w => w.markers.filter(m => text.includes(lower(m)) && !sent.includes(lower(m)) && !shared(m)))
    .map(m => `tenant ${caller.tenant?.tag ?? '-'}'s answer contains another tenant's ${m.length > 40 ? 'token' : `"${m}"`}`)
}

// A session envelope belongs to whoever proved the credentials in the body, not to the bearer
// of the request: there the rule is that a session only opens in a tenant its user belongs to.
const SIGN_IN = new Set(['POST /api/v1/auth/signup', 'POST /api/v1/auth/login', 'POST /api/v1/auth/refresh'])
async function signedIn (res: Inject) {
  const { user, tenant } = res.json() as SessionEnvelope
  if (!tenant) return []
  const { rowCount } = await admin.query('SELECT 1 FROM memberships WHERE user_id = $1 AND tenant_id = $2', [user.id, tenant.id])
  return rowCount ? [] : [`a session for ${user.email} opened in tenant ${tenant.slug}, of which it is no member`]
}

const normalUuid = (id: string) => lower(id.replace(/^urn:uuid:/i, ''))

/** Rules the document cannot state: the other tenant's rows are not found, and event dedup is per tenant. */
function crossTenant (op: Operation, caller: Caller, parts: Parts, res: Inject): string[] {
  const mine = caller.tenant
  const theirs = other(mine)
  if (!mine || !theirs || res.statusCode >= 300) return []
  const wrong: string[] = []
  for (const [name, value] of Object.entries(parts.params)) {
    if (theirs.ownIds.has(value) && !mine.ownIds.has(value)) wrong.push(`${res.statusCode} for the other tenant's ${name} ${value}`)
  }
  const checkpoints = (parts.body as { checkpoints?: Array<{ signature?: unknown }> } | undefined)?.checkpoints
  const replayed = Array.isArray(checkpoints) && checkpoints.some(c => theirs.checkpoints.some(t => t.signature === c?.signature))
  if (op.key === 'POST /api/v1/audit/verify' && replayed) {
    wrong.push('the other tenant\'s checkpoint was accepted')
  }
  if (op.key === 'POST /api/v1/recordings/events' && res.statusCode === 202) {
    const ids = ((parts.body as { events: Array<{ id: string }> }).events).map(e => normalUuid(e.id))
    const fresh = new Set(ids.filter(id => !mine.storedEvents.has(id)))
    const expected = { accepted: fresh.size, duplicates: ids.length - fresh.size }
    const got = res.json()
    // An id the other tenant stored must be new here: a "duplicate" would tell that it exists there.
    if (got.accepted !== expected.accepted || got.duplicates !== expected.duplicates) {
      wrong.push(`ingest answered ${JSON.stringify(got)}, expected ${JSON.stringify(expected)}`)
    }
    for (const id of fresh) mine.storedEvents.add(id)
  }
  return wrong
}

// ---------------------------------------------------------------------------------------------

test(
  `every documented operation, fuzzed from the OpenAPI document as two tenants (seed ${SEED}, ${RUNS} runs each)`,
  { timeout: 120_000 }, async (t) => {
    const doc = (await app.inject('/docs/json')).json()
    const operations = operationsOf(doc)
    const judgeResponse = responseJudge()
    const judgeRequest = requestJudge()
    console.log(`# fuzz seed ${SEED} (FUZZ_SEED=${SEED} reproduces), ${RUNS} runs per operation, ${operations.length} operations`)

    const stats = new Map<string, { requests: number, statuses: Map<number, number>, malformed: number, success: number }>()
    const started = Date.now()
    for (const [index, op] of operations.entries()) {
      const s = { requests: 0, statuses: new Map<number, number>(), malformed: 0, success: 0 }
      stats.set(op.key, s)
      const hints = new Map<Caller, Hints>()
      const bodyLimit = op.key === 'POST /api/v1/recordings/events' ? config.RECORDING_MAX_BATCH_BYTES : config.BODY_LIMIT
      await t.test(op.key, async () => {
        await fc.assert(fc.asyncProperty(fc.gen(), async (g) => {
          const caller = callers[g(fc.constantFrom, ...callersFor(op))]!
          if (!hints.has(caller)) hints.set(caller, hintsFor(op, caller))
          let parts = validish(g, op, hints.get(caller)!)
          let label = 'valid-ish'
          let malformed = false
          if (g(fc.boolean)) {
            const m = mutate(g, op, parts, bodyLimit)
            if (m) {
              parts = m.parts
              label = m.label
              malformed = m.byConstruction || !judgeRequest(op, parts)
            }
          }
          // The one path to a 2xx for a password change is the real password: it would revoke every
          // other session of the caller, so it is never generated.
          if ((parts.body as { currentPassword?: unknown } | undefined)?.currentPassword === OWNER_PASSWORD) return

          const { url, headers, payload } = render(op, parts)
          Object.assign(headers, g(() => extraHeaders), await caller.headers(g))
          const res = await app.inject({ method: op.method as 'GET', url, headers, ...payload !== undefined ? { payload } : {} })
          s.requests++
          s.statuses.set(res.statusCode, (s.statuses.get(res.statusCode) ?? 0) + 1)
          if (malformed) s.malformed++
          if (res.statusCode < 300) s.success++

          const sent = `${url} ${safeDecode(url)} ${payload ?? ''} ${JSON.stringify(headers)}`
          const wrong = [
            ...judgeResponse(op, { statusCode: res.statusCode, headers: res.headers, body: res.body }),
            ...SIGN_IN.has(op.key) && res.statusCode < 300 ? await signedIn(res) : leaks(caller, sent, res.body),
            ...crossTenant(op, caller, parts, res)
          ]
          if (malformed && !(res.statusCode >= 400 && res.statusCode < 500)) {
            wrong.push(`input broken on purpose (${label}) was answered ${res.statusCode}`)
          }
          if (wrong.length) {
            throw new Error(`${op.method} ${url.slice(0, 300)} as ${caller.name} (${label}) → ${res.statusCode} ` +
              `${res.body.slice(0, 400)}\n` +
              `  payload: ${(payload ?? '').slice(0, 400)}\n  - ${wrong.join('\n  - ')}`)
          }
        }), { seed: SEED + index, numRuns: HEAVY.has(op.key) ? Math.ceil(RUNS / 3) : RUNS, endOnFailure: true })
      })
    }
    const elapsed = Date.now() - started

    const rows = [...stats].map(([key, s]) =>
      `#   ${key.padEnd(52)} ${String(s.requests).padStart(4)} req, ${String(s.malformed).padStart(3)} malformed, ` +
      [...s.statuses].sort(([a], [b]) => a - b).map(([code, n]) => `${code}×${n}`).join(' '))
    const total = [...stats.values()].reduce((n, s) => n + s.requests, 0)
    const malformed = [...stats.values()].reduce((n, s) => n + s.malformed, 0)
    console.log(`# ${total} requests (${malformed} malformed on purpose) over ${operations.length} operations in ${elapsed} ms\n` +
      rows.join('\n'))

    // Every operation was reached: it answered at least one 2xx. The password change is the one
    // exception (see above).
    const unreached = [...stats].filter(([key, s]) => s.success === 0 && key !== 'POST /api/v1/auth/password').map(([key]) => key)
    assert.deepEqual(unreached, [], 'operations the fuzzer never got a 2xx from')
    for (const op of operations) {
      if (op.params.length + op.query.length > 0 || op.body) assert.ok(stats.get(op.key)!.malformed > 0, `${op.key} got no malformed input`)
    }

    // Writes stayed in their tenant too: no audit entry of one tenant names a user of the other.
    const { rows: crossed } = await admin.query(
      `SELECT tenant_id, action, actor->>'id' AS actor FROM audit_log
      WHERE (tenant_id = $1 AND actor->>'id' = ANY($4)) OR (tenant_id = $2 AND actor->>'id' = ANY($3))`,
      [A.tenantId, B.tenantId, [A.owner.user.id, A.member.user.id], [B.owner.user.id, B.member.user.id]])
    assert.deepEqual(crossed, [])
    // The callers' sessions survived the run: nothing destructive reached them.
    for (const s of [A.owner, A.member, B.owner, operator]) {
      assert.equal((await app.inject({ url: '/api/v1/auth/sessions', headers: bearer(s) })).statusCode, 200)
    }
  })

function safeDecode (url: string) {
  try { return decodeURIComponent(url) } catch { return url }
}

// What the fuzzer found, pinned whatever the seed: each answered 500 (or broke the problem
// shape) before its fix, and must stay a 400 problem.
test('the inputs the fuzzer found answer 400 problem+json', async () => {
  const operations = operationsOf((await app.inject('/docs/json')).json())
  const judgeResponse = responseJudge()
  const event = (e: Record<string, unknown>) =>
    ({ events: [{ id: randomUUID(), recordingId: 'found-1', type: 'click', occurredAt: new Date().toISOString(), payload: {}, ...e }] })
  const contract = (startsAt: string, endsAt: string, features: Record<string, unknown> = { seats: 5 }) => ({ features, startsAt, endsAt })
  const subject = (await signup(app, { email: uniqueEmail('found'), tenantName: 'Found' })).tenant!.id
  const found: Array<[SessionEnvelope | SessionEnvelope, string, string, unknown?]> = [
    ...['/api/v1/recordings', '/api/v1/recordings/zqxmarka-rec-1/events', '/api/v1/audit'].flatMap(url =>
      ['1e400', 'Infinity', '-1e400'].map(limit => [A.owner, 'GET', `${url}?limit=${limit}`] as [SessionEnvelope, string, string])),
    [operator, 'GET', '/api/v1/operator/jobs?limit=1e400'],
    [operator, 'GET', '/api/v1/operator/tenants?limit=-Infinity'],
    [operator, 'GET', '/api/v1/operator/audit/events?limit=1e400'],
    [operator, 'PUT', `/api/v1/operator/tenants/${subject}/contract`,
      contract('2020-01-01T00:00:00Z', '2030-01-01T00:00:00Z', { seats: 'Infinity' })],
    [operator, 'PUT', `/api/v1/operator/tenants/${subject}/contract`, contract('0000-01-01T00:00:00Z', '2030-01-01T00:00:00Z')],
    [operator, 'PUT', `/api/v1/operator/tenants/${subject}/contract`, contract('2030-01-01T00:00:00Z', '2020-01-01T00:00:00Z')],
    [operator, 'GET', '/api/v1/operator/tenants?cursor=not-a-tenant-id'],
    [operator, 'GET', '/api/v1/operator/jobs?job=%00'],
    [A.owner, 'GET', '/api/v1/audit?action=a%00b'],
    [A.owner, 'POST', '/api/v1/recordings/events', event({ id: `urn:uuid:${randomUUID()}` })],
    [A.owner, 'POST', '/api/v1/recordings/events', event({ type: 'a\u0000b' })],
    [A.owner, 'POST', '/api/v1/recordings/events', event({ payload: { text: 'a\u0000b' } })],
    [A.owner, 'POST', '/api/v1/recordings/events', event({ payload: { '\u0000': 1 } })],
    [A.owner, 'POST', '/api/v1/recordings/events', event({ payload: { text: '\ud800' } })],
    [A.owner, 'DELETE', '/api/v1/tenant/members/%zz']
  ]
  for (const [who, method, url, payload] of found) {
    const res = await app.inject({
      method: method as 'GET', url, headers: bearer(who), ...payload !== undefined ? { payload: payload as object } : {}
    })
    const op = operations.find(o => o.method === method && new RegExp(`^${o.path.replace(/\{\w+\}/g, '[^/]+')}(\\?|$)`).test(url))!
    assert.equal(res.statusCode, 400, `${method} ${url}: ${res.body}`)
    assert.deepEqual(judgeResponse(op, { statusCode: res.statusCode, headers: res.headers, body: res.body }), [], `${method} ${url}`)
  }
  // What the fixes must still let through: the escape sequences as text, not the characters,
  // and an offset Postgres has no room for, which is only another way to write an instant.
  const fine = await app.inject({
    method: 'POST',
    url: '/api/v1/recordings/events',
    headers: bearer(A.owner),
    payload: event({ type: 'a\\u0000b', payload: { text: '\\u0000 \\ud800', emoji: '😀' } })
  })
  assert.equal(fine.statusCode, 202, fine.body)
  const offset = await app.inject({
    method: 'PUT',
    url: `/api/v1/operator/tenants/${subject}/contract`,
    headers: bearer(operator),
    payload: contract('2020-01-01T00:00:00Z', '2030-01-01T00:00:00-23:59')
  })
  assert.equal(offset.statusCode, 200, offset.body)
  assert.equal(offset.json().endsAt, '2030-01-01T23:59:00.000Z')
})
