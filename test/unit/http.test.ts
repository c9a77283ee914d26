import assert from 'node:assert/strict'
import { test } from 'node:test'
import { bearerCredentials, bearerToken } from '../../infra/http.js'

test('bearerToken: the token of "Bearer <token>" (scheme in any case), nothing with whitespace in it', () => {
  assert.equal(bearerToken('Bearer abc.DEF_-123'), 'abc.DEF_-123')
  assert.equal(bearerToken('bearer abc'), 'abc')
  assert.equal(bearerToken('BEARER abc'), 'abc')
  for (const header of [undefined, '', 'Bearer', 'Bearer ', 'Bearer  abc', 'Bearer abc def', 'Bearer abc ', 'Bearer\tabc',
    'Bearerabc', 'Basic YWxhZGRpbjpvcGVuc2VzYW1l', ' Bearer abc', 'Bearer abc\n', 'Token abc']) {
    assert.equal(bearerToken(header), null, JSON.stringify(header))
  }
})

test('bearerCredentials: everything after "Bearer ", spaces included (a shared secret may hold them)', () => {
  assert.equal(bearerCredentials('Bearer my shared secret'), 'my shared secret')
  assert.equal(bearerCredentials('bearer  padded '), ' padded ')
  assert.equal(bearerCredentials('Bearer new,old'), 'new,old')
  for (const header of [undefined, '', 'Bearer', 'Bearer ', 'Bearerx', 'Basic abc']) {
    assert.equal(bearerCredentials(header), null, JSON.stringify(header))
  }
})
