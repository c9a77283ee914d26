import assert from 'node:assert/strict'
import { performance } from 'node:perf_hooks'
import { test } from 'node:test'
import { createLimiter, createPasswordHasher } from '../infra/passwords.js'
import { adminClient, buildTestApp, captureLogs, createTestDatabase, testConfig, waitFor } from './support/app.js'
import { bearer, changePassword, login, signup, uniqueEmail } from './support/actors.js'
import { assertProblem } from './support/assertions.js'

const db = await createTestDatabase()
// Limits high enough that only the behaviour under test decides the answers.
const config = testConfig(db, { AUTH_RATE_LIMIT_MAX: 10_000, LOGIN_MAX_FAILURES_PER_HOUR: 10_000, LOGIN_MAX_FAILURES_PER_CLIENT: 10_000 })
const app = await buildTestApp(config)
const admin = await adminClient(db)

function median (values: number[]) {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]!
}

const storedHash = async (userId: string) =>
  (await admin.query<{ password_hash: string }>('SELECT password_hash FROM users WHERE id = $1', [userId])).rows[0]!.password_hash

test('the stored hash is argon2id at OWASP\'s minimum (m=19456, t=2, p=1), salted per user', async () => {
  const a = await signup(app)
  const b = await signup(app)
  const [ha, hb] = [await storedHash(a.user.id), await storedHash(b.user.id)]
  assert.match(ha, /^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$/)
  assert.notEqual(ha, hb, 'same password, different salts')
  assert.ok(!ha.includes('correct horse'))
})

test('a hash made with other parameters is replaced at the next successful login, not at a failed one', async () => {
  const user = await signup(app)
  const logs = captureLogs()
  const stronger = await buildTestApp(testConfig(db, { ARGON2_TIME_COST: 3, LOG_LEVEL: 'info' }), { logs })
  assertProblem(await login(stronger, { email: user.user.email, password: 'wrong password' }), 401, 'AUTH_INVALID_CREDENTIALS')
  assert.match(await storedHash(user.user.id), /\$m=19456,t=2,p=1\$/, 'a failed login changes nothing')
  const res = await login(stronger, { email: user.user.email })
  assert.equal(res.statusCode, 200, res.body)
  assert.match(await storedHash(user.user.id), /^\$argon2id\$v=19\$m=19456,t=3,p=1\$/)
  assert.ok(logs.lines.some(l => l.msg === 'password rehashed with the current parameters'))
  // The new hash still verifies, on both parameter sets (argon2 reads them from the hash).
  assert.equal((await login(stronger, { email: user.user.email })).statusCode, 200)
  assert.equal((await login(app, { email: user.user.email })).statusCode, 200)
  assert.match(await storedHash(user.user.id), /\$m=19456,t=2,p=1\$/, 'and back when the policy goes back')
})

test('length: 8 to 256 characters; 7 and 257 are 400 naming body.password', async () => {
  for (const password of ['x'.repeat(8), 'é'.repeat(256)]) {
    const user = await signup(app, { password })
    assert.equal((await login(app, { email: user.user.email, password })).statusCode, 200)
  }
  for (const password of ['x'.repeat(7), 'x'.repeat(257)]) {
    const res = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/signup',
      payload: { email: uniqueEmail(), password, tenantName: 'Too short or long' }
    })
    const body = assertProblem(res, 400, 'VALIDATION_FAILED')
    assert.equal(body.errors![0]!.field, 'body.password')
  }
  const user = await signup(app)
  assertProblem(await login(app, { email: user.user.email, password: 'x'.repeat(257) }), 400, 'VALIDATION_FAILED')
  const change = await changePassword(app, user, 'correct horse battery', 'short')
  assert.equal(assertProblem(change, 400, 'VALIDATION_FAILED').errors![0]!.field, 'body.newPassword')
})

test('no truncation: 64- and 200-character passwords work, and one differing only in its last character fails', async () => {
  for (const length of [64, 73, 200]) {
    const password = Array.from({ length }, (_, i) => 'abcdefghij'[i % 10]).join('')
    const user = await signup(app, { password })
    assert.equal((await login(app, { email: user.user.email, password })).statusCode, 200, `${length} characters`)
    const lastChanged = password.slice(0, -1) + 'Z'
    assertProblem(await login(app, { email: user.user.email, password: lastChanged }), 401, 'AUTH_INVALID_CREDENTIALS')
    assertProblem(await login(app, { email: user.user.email, password: password.slice(0, -1) }), 401, 'AUTH_INVALID_CREDENTIALS')
  }
})

test('unknown email and wrong password: the same 401, and comparable time (a dummy hash is verified)', async () => {
  const user = await signup(app)
  const unknown = uniqueEmail('nobody')
  const attempt = async (email: string) => {
    const started = performance.now()
    const res = await login(app, { email, password: 'wrong password!' })
    return { ms: performance.now() - started, res }
  }
  const a = await attempt(unknown)
  const b = await attempt(user.user.email)
  const strip = (r: typeof a.res) => { const { requestId, ...rest } = r.json(); return rest }
  assert.deepEqual(strip(a.res), strip(b.res), 'the same body, word for word')
  assert.equal(a.res.statusCode, 401)
  assert.equal(a.res.json().code, 'AUTH_INVALID_CREDENTIALS')

  // Interleaved so that machine noise hits both sides alike; medians resist outliers.
  const known: number[] = []
  const unknowns: number[] = []
  for (let i = 0; i < 7; i++) {
    unknowns.push((await attempt(unknown)).ms)
    known.push((await attempt(user.user.email)).ms)
  }
  const ratio = median(unknowns) / median(known)
  // Without the dummy hash an unknown email answers in ~1 ms against ~30-60 ms.
  assert.ok(ratio > 0.5, `unknown email ${median(unknowns).toFixed(1)} ms vs wrong password ${median(known).toFixed(1)} ms`)
})

test('50 simultaneous logins: every one answered correctly, no 5xx', async () => {
  const users = [await signup(app), await signup(app)]
  const attempts = Array.from({ length: 50 }, (_, i) => {
    const user = users[i % 2]!
    const right = i % 3 !== 0
    return { right, run: () => login(app, { email: user.user.email, password: right ? 'correct horse battery' : 'wrong password!' }) }
  })
  const results = await Promise.all(attempts.map(a => a.run()))
  for (const [i, res] of results.entries()) {
    assert.equal(res.statusCode, attempts[i]!.right ? 200 : 401, res.body)
  }
})

test('hashing is bounded: the limiter runs at most `limit` tasks, in order, and frees the slot of a failed one', async () => {
  // Timing cannot prove the bound on a 2-core machine (19 MiB hashes are memory-bound, so
  // parallel and queued runs take about as long): count the tasks in flight instead.
  const limit = createLimiter(4)
  let active = 0
  let peak = 0
  const started: number[] = []
  const gates: Array<() => void> = []
  const tasks = Array.from({ length: 50 }, (_, i) => limit(async () => {
    started.push(i)
    peak = Math.max(peak, ++active)
    await new Promise<void>(resolve => gates.push(resolve))
    active--
    if (i % 7 === 0) throw new Error(`task ${i} failed`)
    return i
  }))
  const settled = Promise.allSettled(tasks)
  // Release the running tasks one at a time until all 50 have run.
  for (let released = 0; released < 50; released++) {
    await waitFor(() => gates.length > 0, { what: 'a running task' })
    assert.ok(active <= 4)
    gates.shift()!()
  }
  const results = await settled
  assert.equal(peak, 4)
  assert.deepEqual(started, Array.from({ length: 50 }, (_, i) => i), 'first come, first served')
  assert.equal(results.filter(r => r.status === 'rejected').length, 8, 'failures reject their own caller only')
  // And the slots are all free again.
  assert.equal(await limit(async () => 'free'), 'free')
})

test('the hasher: verify accepts the right password only, refuses a malformed hash, needsRehash follows the policy', async () => {
  const hasher = await createPasswordHasher({ memoryKiB: 19_456, timeCost: 2, parallelism: 1, maxConcurrency: 2 })
  const h = await hasher.hash('the password')
  assert.equal(await hasher.verify(h, 'the password'), true)
  assert.equal(await hasher.verify(h, 'the passworD'), false)
  assert.equal(await hasher.verify(null, 'the password'), false, 'no user: never true')
  assert.equal(await hasher.verify('not a hash', 'the password'), false)
  assert.equal(hasher.needsRehash(h), false)
  assert.equal(hasher.needsRehash(h.replace('t=2', 't=3')), true)
  assert.equal(hasher.needsRehash('$2b$10$bcrypthashbcrypthashbcrypthash'), true)
})

test('password change: a wrong current password is refused, the new one works, the old one no longer does', async () => {
  const user = await signup(app)
  const wrong = await changePassword(app, user, 'not it at all', 'a brand new password')
  assertProblem(wrong, 401, 'AUTH_INVALID_CREDENTIALS')
  const ok = await changePassword(app, user, 'correct horse battery', 'a brand new password')
  assert.equal(ok.statusCode, 204, ok.body)
  assert.match(await storedHash(user.user.id), /^\$argon2id\$v=19\$m=19456,t=2,p=1\$/)
  assertProblem(await login(app, { email: user.user.email }), 401, 'AUTH_INVALID_CREDENTIALS')
  assert.equal((await login(app, { email: user.user.email, password: 'a brand new password' })).statusCode, 200)
  assert.equal((await app.inject({ url: '/api/v1/tenant', headers: bearer(user) })).statusCode, 200, 'the current session keeps working')
})
