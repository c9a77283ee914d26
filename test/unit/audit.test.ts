import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { test } from 'node:test'
import fc from 'fast-check'
import { canonicalJson, chainRowHash, chainTenant, GENESIS_HASH, headsFrom, type ChainRow } from '../../services/audit.js'

// The audit chain's hash input is a published format (anyone holding the rows recomputes it):
// these tests pin it byte for byte, without a database.
const sha256 = (text: string) => createHash('sha256').update(text, 'utf8').digest('hex')
const TENANT = '6f1c1e4e-8a55-4b3e-9d2a-0c4f5a6b7c8d'

test('canonical JSON sorts keys at every depth, keeps array order, and writes no whitespace', () => {
  assert.equal(canonicalJson({ b: 1, a: { z: [3, 1, 2], y: { d: null, c: true } }, aa: 'x', B: 0, '': -1 }),
    '{"":-1,"B":0,"a":{"y":{"c":true,"d":null},"z":[3,1,2]},"aa":"x","b":1}')
  assert.equal(canonicalJson([{ b: 1, a: 2 }, [], {}]), '[{"a":2,"b":1},[],{}]')
  assert.equal(canonicalJson({ 10: 'ten', 9: 'nine', '-1': 'minus' }), '{"-1":"minus","10":"ten","9":"nine"}',
    'numeric-looking keys sort as strings, not in insertion or integer order')
  assert.equal(canonicalJson(Object.assign(Object.create(null), { b: 2, a: 1 })), '{"a":1,"b":2}', 'a null-prototype object is plain')
})

test('canonical JSON strings: non-ASCII as is, control characters and quotes escaped, lone surrogates as escapes', () => {
  assert.equal(canonicalJson('Zoë ✓ 😀'), '"Zoë ✓ 😀"')
  assert.equal(canonicalJson('"\\/\b\f\n\r\t\u0000\u001f\u007f'), '"\\"\\\\/\\b\\f\\n\\r\\t\\u0000\\u001f\u007f"')
  assert.equal(canonicalJson('\u2028\u2029'), '"\u2028\u2029"')
  assert.equal(canonicalJson('\ud800'), '"\\ud800"')
  assert.equal(canonicalJson({ é: 1, e: 2, z: 3 }), '{"e":2,"z":3,"é":1}', 'keys sort by code unit')
})

test('canonical JSON numbers are ECMAScript\'s shortest form; non-finite numbers are refused', () => {
  assert.equal(canonicalJson([0, -0, 1, -1, 1.5, 100, 1e20, 1e21, 1e-6, 1e-7, 2 ** 53, 0.1 + 0.2]),
    '[0,0,1,-1,1.5,100,100000000000000000000,1e+21,0.000001,1e-7,9007199254740992,0.30000000000000004]')
  for (const n of [Number.NaN, Infinity, -Infinity]) assert.throws(() => canonicalJson(n), /NaN or Infinity/)
  assert.throws(() => canonicalJson({ a: [1, Number.NaN] }), /NaN or Infinity/, 'nested too')
})

test('canonical JSON refuses anything that is not plain JSON instead of guessing', () => {
  const refused: unknown[] = [
    undefined, { a: undefined }, [undefined], () => 1, 1n, Symbol('s'),
    new Date(0), new Map(), new Set(), /re/, new (class Thing { a = 1 })(), Buffer.from('x'), { nested: { when: new Date(0) } }
  ]
  for (const value of refused) assert.throws(() => canonicalJson(value), TypeError, String(value))
})

test('canonical JSON round-trips any JSON value and does not depend on key insertion order (property)', () => {
  const reversed = (v: unknown): unknown => Array.isArray(v)
    ? v.map(reversed)
    : v !== null && typeof v === 'object'
      ? Object.fromEntries(Object.entries(v).reverse().map(([k, x]) => [k, reversed(x)]))
      : v
  fc.assert(fc.property(fc.jsonValue(), value => {
    const text = canonicalJson(value)
    assert.deepEqual(JSON.parse(text), JSON.parse(JSON.stringify(value)))
    assert.equal(canonicalJson(JSON.parse(text)), text, 'idempotent')
    assert.equal(canonicalJson(reversed(value)), text)
  }), { numRuns: 300 })
})

test('GENESIS_HASH is 64 zeros: the prev hash of every chain\'s first row', () => {
  assert.equal(GENESIS_HASH, '0'.repeat(64))
})

const row1: Omit<ChainRow, 'hash'> = {
  seq: 1,
  occurredAt: '2025-06-01T12:00:00.000Z',
  actor: { type: 'user', id: 'u1', email: 'a@example.com' },
  action: 'member.added',
  target: { type: 'user', id: 'u2' },
  data: { role: 'admin', name: 'Zoë' },
  prevHash: GENESIS_HASH
}

test('a row\'s hash is the SHA-256 of its canonical form: chain, entry, time, prev hash, seq and tenant', () => {
  const canonical = '{"chain":"audit_log","entry":{"action":"member.added","actor":{"email":"a@example.com","id":"u1","type":"user"},' +
    '"data":{"name":"Zoë","role":"admin"},"target":{"id":"u2","type":"user"}},"occurredAt":"2025-06-01T12:00:00.000Z",' +
    `"prevHash":"${GENESIS_HASH}","seq":1,"tenantId":"${TENANT}"}`
  const hash = chainRowHash('audit_log', TENANT, row1)
  assert.equal(hash, sha256(canonical))
  // Pinned: stored chains were hashed this way, so any change to the format breaks their verification.
  assert.equal(hash, 'bfb14e812bf415d9ba81180203f014fb0f1c3c596ee97ad0138792f6c86c40eb')

  const operator = chainRowHash('operator_audit_events', null, { ...row1, target: null, data: {} })
  assert.equal(operator, sha256('{"chain":"operator_audit_events","entry":{"action":"member.added","actor":{"email":"a@example.com",' +
    `"id":"u1","type":"user"},"data":{},"target":null},"occurredAt":"2025-06-01T12:00:00.000Z","prevHash":"${GENESIS_HASH}",` +
    '"seq":1,"tenantId":null}'))
})

test('every field a row carries is covered by its hash, and each row is linked to the one before', () => {
  const h1 = chainRowHash('audit_log', TENANT, row1)
  const row2 = { ...row1, seq: 2, prevHash: h1, action: 'member.removed' }
  const h2 = chainRowHash('audit_log', TENANT, row2)
  assert.match(h2, /^[0-9a-f]{64}$/)

  const variants: Array<[string, string]> = [
    ['chain', chainRowHash('tenant_operation_log', TENANT, row2)],
    ['tenant', chainRowHash('audit_log', TENANT.replace('6f', '7f'), row2)],
    ['seq', chainRowHash('audit_log', TENANT, { ...row2, seq: 3 })],
    ['time', chainRowHash('audit_log', TENANT, { ...row2, occurredAt: '2025-06-01T12:00:00.001Z' })],
    ['actor', chainRowHash('audit_log', TENANT, { ...row2, actor: { ...row1.actor as object, id: 'u3' } })],
    ['action', chainRowHash('audit_log', TENANT, { ...row2, action: 'member.added' })],
    ['target', chainRowHash('audit_log', TENANT, { ...row2, target: null })],
    ['data', chainRowHash('audit_log', TENANT, { ...row2, data: { role: 'member', name: 'Zoë' } })],
    ['prev hash', chainRowHash('audit_log', TENANT, { ...row2, prevHash: chainRowHash('audit_log', TENANT, { ...row1, data: {} }) })]
  ]
  for (const [field, hash] of variants) assert.notEqual(hash, h2, field)
  assert.equal(new Set(variants.map(([, h]) => h)).size, variants.length)
  assert.equal(chainRowHash('audit_log', TENANT, { ...row2, data: { name: 'Zoë', role: 'admin' } }), h2,
    'key order in the data does not matter')
})

test('chainTenant: a tenant chain needs a tenant, the operator chain takes none, ids are hashed lower-case', () => {
  assert.equal(chainTenant('audit_log', TENANT.toUpperCase()), TENANT)
  assert.equal(chainTenant('tenant_operation_log', TENANT), TENANT)
  assert.equal(chainTenant('operator_audit_events', null), null)
  assert.throws(() => chainTenant('audit_log', null), /audit_log needs a tenant/)
  assert.throws(() => chainTenant('operator_audit_events', TENANT), /takes no tenant/)
})

test('headsFrom: trusted heads between two seqs (lower bound excluded), and the first past a seq, in seq order', async () => {
  const heads = headsFrom([{ seq: 30, hash: 'c' }, { seq: 10, hash: 'a' }, { seq: 20, hash: 'b' }])
  assert.deepEqual((await heads.between(10, 30)).map(h => h.seq), [20, 30])
  assert.deepEqual((await heads.between(0, 10)).map(h => h.seq), [10])
  assert.deepEqual(await heads.between(30, 100), [])
  assert.equal((await heads.after(10))?.seq, 20)
  assert.equal((await heads.after(0))?.seq, 10)
  assert.equal(await heads.after(30), null)
})
