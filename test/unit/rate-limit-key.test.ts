import assert from 'node:assert/strict'
import { test } from 'node:test'
import fc from 'fast-check'
import { limiterKey, type LimiterKind } from '../../infra/rate-limit-store.js'

const KINDS: LimiterKind[] = ['ip', 'tenant', 'user', 'account', 'cron']

test('limiterKey: the kind, then each value percent-encoded, joined by ":"', () => {
  assert.equal(limiterKey('ip', '203.0.113.7'), 'ip:203.0.113.7')
  assert.equal(limiterKey('ip', '2001:db8::1'), 'ip:2001%3Adb8%3A%3A1')
  assert.equal(limiterKey('user', 'u1', 't1'), 'user:u1:t1')
  assert.equal(limiterKey('account', 'a b@example.com'), 'account:a%20b%40example.com')
})

test('limiterKey: no value a client sends reads as another kind\'s key, or as other values', () => {
  assert.notEqual(limiterKey('ip', 'tenant:t1'), limiterKey('tenant', 't1'))
  assert.equal(limiterKey('ip', 'tenant:t1'), 'ip:tenant%3At1')
  assert.notEqual(limiterKey('user', 'a:b', 'c'), limiterKey('user', 'a', 'b:c'))
  assert.notEqual(limiterKey('user', 'a%3Ab'), limiterKey('user', 'a:b'), 'a literal escape is escaped again')
  // Separators and escapes are where a collision would hide: they are drawn often.
  const part = fc.oneof(
    fc.string({ unit: 'grapheme', maxLength: 8 }),
    fc.string({ unit: fc.constantFrom(':', '%', '3', 'A', 'a'), maxLength: 8 }))
  const key = fc.tuple(fc.constantFrom(...KINDS), fc.array(part, { minLength: 1, maxLength: 3 }))
  fc.assert(fc.property(key, key, ([k1, v1], [k2, v2]) => {
    const same = k1 === k2 && v1.length === v2.length && v1.every((v, i) => v === v2[i])
    assert.equal(limiterKey(k1, ...v1) === limiterKey(k2, ...v2), same)
  }), { numRuns: 2000 })
})
