import assert from 'node:assert/strict'
import { test } from 'node:test'
import { checkedClientAddress, parseTrustProxy, TRUST_PROXY_TRUE_REFUSED, trustProxyOption } from '../../infra/client-address.js'
import { clientKey } from '../../services/login-throttle.js'

test('TRUST_PROXY off: false, unset, 0 and the words for no', () => {
  for (const raw of [false, undefined, 0, '0', 'false', 'FALSE', 'no', 'Off', '', '  ']) {
    assert.deepEqual(parseTrustProxy(raw), { value: false }, JSON.stringify(raw))
  }
})

test('TRUST_PROXY true is refused, in every spelling, with the reason', () => {
  for (const raw of [true, 'true', 'TRUE', ' yes ', 'on']) {
    assert.deepEqual(parseTrustProxy(raw), { error: TRUST_PROXY_TRUE_REFUSED }, String(raw))
  }
})

test('TRUST_PROXY hop counts: integers 1 to 10, as numbers or text', () => {
  assert.deepEqual(parseTrustProxy(1), { value: 1 })
  assert.deepEqual(parseTrustProxy('2'), { value: 2 })
  assert.deepEqual(parseTrustProxy(' 10 '), { value: 10 })
  for (const raw of [11, '11', -1, 1.5, Number.NaN, '99999999999999999999']) {
    const parsed = parseTrustProxy(raw)
    assert.ok('error' in parsed && /hop count from 0 to 10/.test(parsed.error), String(raw))
  }
  assert.ok('error' in parseTrustProxy('-1'), 'a negative count is not a list of addresses either')
  assert.ok('error' in parseTrustProxy('1.5'))
})

test('TRUST_PROXY lists: IPs, CIDRs and named ranges, normalised; anything else is named in the error', () => {
  assert.deepEqual(parseTrustProxy(' 10.0.0.0/8 , 127.0.0.1,::1, fd00::/8 '), { value: '10.0.0.0/8,127.0.0.1,::1,fd00::/8' })
  assert.deepEqual(parseTrustProxy('loopback,linklocal,uniquelocal'), { value: 'loopback,linklocal,uniquelocal' })
  assert.deepEqual(parseTrustProxy('192.168.1.1/32,2001:db8::/128'), { value: '192.168.1.1/32,2001:db8::/128' })
  const refused: Array<[string, string]> = [
    ['10.0.0.0/33', '10.0.0.0/33'],
    ['10.0.0.0/0', '10.0.0.0/0'],
    ['10.0.0.0/', '10.0.0.0/'],
    ['10.0.0.0/8x', '10.0.0.0/8x'],
    ['::1/129', '::1/129'],
    ['127.0.0.1,proxy.internal', 'proxy.internal'],
    ['256.0.0.1', '256.0.0.1'],
    ['10.0.0.1 10.0.0.2', '10.0.0.1 10.0.0.2'],
    [',', ',']
  ]
  for (const [raw, named] of refused) {
    const parsed = parseTrustProxy(raw)
    assert.ok('error' in parsed, raw)
    assert.ok(parsed.error.includes(JSON.stringify(named)), `${raw}: ${parsed.error}`)
  }
})

test('trustProxyOption: a hop count trusts exactly the last N hops; lists pass through', () => {
  assert.equal(trustProxyOption(false), false)
  assert.equal(trustProxyOption('10.0.0.0/8'), '10.0.0.0/8')
  const two = trustProxyOption(2)
  assert.equal(typeof two, 'function')
  const trusts = two as (address: string, hop: number) => boolean
  assert.deepEqual([0, 1, 2, 3].map(hop => trusts('203.0.113.1', hop)), [true, true, false, false])
})

test('checkedClientAddress: the picked hop when it is an IP address, else the socket peer', () => {
  const peer = '10.0.0.5'
  assert.equal(checkedClientAddress('203.0.113.7', peer), '203.0.113.7')
  assert.equal(checkedClientAddress('2001:db8::1', peer), '2001:db8::1')
  const notAddresses = [undefined, '', 'tenant:abc', 'unknown', '203.0.113.7, 10.0.0.1', '203.0.113.7:443', 'fe80::1%eth0', ' 203.0.113.7']
  for (const picked of notAddresses) {
    assert.equal(checkedClientAddress(picked, peer), peer, JSON.stringify(picked))
  }
  assert.equal(checkedClientAddress('not an ip', undefined), undefined)
})

test('clientKey: IPv4 as is (also when mapped into IPv6), an IPv6 client by its /64, anything else one bucket', () => {
  assert.equal(clientKey('203.0.113.7'), '203.0.113.7')
  assert.equal(clientKey('::ffff:203.0.113.7'), '203.0.113.7')
  assert.equal(clientKey('::FFFF:203.0.113.7'), '203.0.113.7')
  assert.equal(clientKey('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64')
  assert.equal(clientKey('2001:0db8:0001:0002:ffff:ffff:ffff:ffff'), '2001:db8:1:2::/64', 'the same /64, however written')
  assert.equal(clientKey('2001:db8::1'), '2001:db8:0:0::/64')
  assert.equal(clientKey('2001:DB8::1'), '2001:db8:0:0::/64')
  assert.equal(clientKey('fe80::1%eth0'), 'fe80:0:0:0::/64', 'the zone id is dropped')
  assert.equal(clientKey('::1'), '0:0:0:0::/64')
  assert.notEqual(clientKey('2001:db8:1:2::1'), clientKey('2001:db8:1:3::1'))
  for (const ip of [null, undefined, '', 'unknown', 'tenant:x', '300.1.1.1', '::ffff:300.1.1.1']) {
    assert.equal(clientKey(ip), 'unknown', String(ip))
  }
})
