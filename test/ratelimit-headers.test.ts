import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import { parseList } from 'structured-headers'
import { bearer, loginOperator, setContract, signup } from './support/actors.js'
import { buildTestApp, createTestDatabase, testConfig } from './support/app.js'

// RateLimit and RateLimit-Policy are Structured Fields (RFC 9651) lists: a client's strict
// parser must read them in every case, and an integer has 15 digits at most.

const db = await createTestDatabase()
const app = await buildTestApp(testConfig(db, { RATE_LIMIT_MAX: 5, RATE_LIMIT_WINDOW: 60_000 }))
after(() => app.close())
const operator = await loginOperator(app)

/** Both headers, parsed strictly: policy name → its parameters. */
function parsed (headers: Record<string, unknown>) {
  const read = (name: string) => {
    const value = headers[name]
    assert.equal(typeof value, 'string', `${name} is sent`)
    return new Map(parseList(value as string).map(([item, params]) => {
      assert.equal(typeof item, 'string', `${name}: each policy is named by a string`)
      for (const [key, v] of params) {
        assert.ok(Number.isInteger(v) && (v as number) >= 0, `${name}: ${key}=${String(v)} is a non-negative integer`)
      }
      return [item as string, Object.fromEntries(params) as Record<string, number>]
    }))
  }
  return { policy: read('ratelimit-policy'), state: read('ratelimit') }
}

test('the headers parse strictly on a limited and an unlimited tenant\'s reads and on 429s; a 429 names the real window', async () => {
  const limited = await signup(app)
  await setContract(app, operator, limited.tenant!.id, { api_requests_per_minute: 3 })
  const unlimited = await signup(app)
  await setContract(app, operator, unlimited.tenant!.id, { api_requests_per_minute: null })
  const read = (t: { accessToken: string }, remoteAddress: string) =>
    app.inject({ url: '/api/v1/tenant', headers: bearer(t), remoteAddress })

  const first = await read(limited, '192.0.2.1')
  assert.equal(first.statusCode, 200, first.body)
  const { policy, state } = parsed(first.headers)
  assert.deepEqual([...policy.keys()].sort(), ['ip', 'tenant', 'user'])
  assert.deepEqual(policy.get('tenant'), { q: 3, w: 60 })
  assert.equal(state.get('tenant')!.r, 2)
  assert.deepEqual(policy.get('user'), { q: 1, w: 60 })

  // An unlimited tenant: nothing to count, and no 2^53 - 1 quota that a parser refuses.
  const open = await read(unlimited, '192.0.2.2')
  assert.equal(open.statusCode, 200, open.body)
  assert.deepEqual([...parsed(open.headers).policy.keys()], ['ip'])

  // The user's share of the tenant's window spent (half of 3: 1, the first read took it):
  // 429, and the headers still parse, naming the spent policy.
  const spent = await read(limited, '192.0.2.3')
  assert.equal(spent.statusCode, 429, spent.body)
  assert.deepEqual(parsed(spent.headers).state.get('user'), { r: 0, t: 60 })
  assert.match(spent.json().detail, /^the user limit of 1 requests per 60 s is spent/)

  // The per-IP window spent (5 per 60 s): the text names the window, not the time left.
  let ipSpent
  for (let i = 0; i < 10 && ipSpent === undefined; i++) {
    const res = await read(unlimited, '192.0.2.2')
    if (res.statusCode === 429) ipSpent = res
  }
  assert.ok(ipSpent, 'the per-IP limit answered 429')
  assert.match(ipSpent.json().detail, /^rate limit of 5 requests per 60 s exceeded; retry in \d+ s$/)
  assert.equal(parsed(ipSpent.headers).state.get('ip')!.r, 0)
})
