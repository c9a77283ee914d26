import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createRefusedTokens, type Refusal } from '../../infra/refused-tokens.js'

const T0 = 1_700_000_000_000
const refusal = (tenantId: string, resetAt: number, policy: Refusal['policy'] = 'tenant'): Refusal =>
  ({ policy, tenantId, resetAt, limit: 100, windowS: 60 })

function clock () {
  const c = { now: T0, fn: () => c.now }
  return c
}

test('a remembered refusal is found for that token only, until its window resets (then forgotten)', () => {
  const c = clock()
  const refused = createRefusedTokens({ now: c.fn })
  assert.equal(refused.lookup('tok-a'), null, 'empty')
  const r = refusal('t1', T0 + 30_000)
  refused.remember('tok-a', r)
  assert.deepEqual(refused.lookup('tok-a'), r)
  assert.equal(refused.lookup('tok-b'), null)
  assert.equal(refused.lookup('tok-a '), null, 'the exact token')

  c.now = T0 + 29_999
  assert.deepEqual(refused.lookup('tok-a'), r)
  c.now = T0 + 30_000
  assert.equal(refused.lookup('tok-a'), null, 'gone at resetAt')
  assert.equal(refused.size, 0, 'an expired refusal is dropped when looked up')
  c.now = T0
  assert.equal(refused.lookup('tok-a'), null, 'and does not come back')
})

test('remembering a token again replaces its refusal', () => {
  const c = clock()
  const refused = createRefusedTokens({ now: c.fn })
  refused.remember('tok', refusal('t1', T0 + 1000))
  const later = refusal('t1', T0 + 60_000, 'user')
  refused.remember('tok', later)
  assert.equal(refused.size, 1)
  c.now = T0 + 5000
  assert.deepEqual(refused.lookup('tok'), later)
})

test('forgetTenant drops that tenant\'s refusals, whichever policy, and only those', () => {
  const refused = createRefusedTokens({ now: () => T0 })
  refused.remember('a1', refusal('t1', T0 + 60_000))
  refused.remember('a2', refusal('t1', T0 + 60_000, 'user'))
  refused.remember('b1', refusal('t2', T0 + 60_000))
  refused.forgetTenant('t1')
  assert.equal(refused.lookup('a1'), null)
  assert.equal(refused.lookup('a2'), null)
  assert.equal(refused.lookup('b1')?.tenantId, 't2')
  assert.equal(refused.size, 1)
  refused.forgetTenant('nobody')
  assert.equal(refused.size, 1)
})

test('bounded: past max entries it starts afresh', () => {
  const refused = createRefusedTokens({ now: () => T0, max: 3 })
  for (const t of ['a', 'b', 'c']) refused.remember(t, refusal('t1', T0 + 60_000))
  assert.equal(refused.size, 3)
  refused.remember('d', refusal('t1', T0 + 60_000))
  assert.equal(refused.size, 1)
  assert.equal(refused.lookup('a'), null, 'the old entries are gone')
  assert.ok(refused.lookup('d'), 'the newest is kept')

  const big = createRefusedTokens({ now: () => T0 })
  for (let i = 0; i < 10_000; i++) big.remember(`tok-${i}`, refusal('t1', T0 + 60_000))
  assert.equal(big.size, 10_000, 'the default bound')
  big.remember('one-more', refusal('t1', T0 + 60_000))
  assert.equal(big.size, 1)
})

test('the default clock is the wall clock', () => {
  const refused = createRefusedTokens()
  refused.remember('past', refusal('t1', Date.now() - 1))
  refused.remember('future', refusal('t1', Date.now() + 60_000))
  assert.equal(refused.lookup('past'), null)
  assert.ok(refused.lookup('future'))
})
