import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { test } from 'node:test'
import { hashToken, newToken, tokenUserId } from '../../services/tokens.js'

const SHAPE = /^[0-9a-f]{32}\.[A-Za-z0-9_-]{43}$/

test('newToken embeds the user id and 256 random bits; tokenUserId reads the id back', () => {
  const id = randomUUID()
  const token = newToken(id)
  assert.match(token, SHAPE)
  assert.equal(token.slice(0, 32), id.replace(/-/g, ''))
  assert.equal(Buffer.from(token.slice(33), 'base64url').length, 32)
  assert.equal(tokenUserId(token), id)
  assert.notEqual(newToken(id), token, 'never the same token twice')
  const many = new Set(Array.from({ length: 200 }, () => newToken(id)))
  assert.equal(many.size, 200)
})

test('tokenUserId refuses anything malformed', () => {
  const good = newToken(randomUUID())
  const [prefix, secret] = good.split('.') as [string, string]
  const malformed = [
    '',
    prefix,
    `${prefix}.`,
    `.${secret}`,
    `${prefix}${secret}`,
    `${prefix}.${secret}x`, // 44 characters of secret
    `${prefix}.${secret.slice(1)}`,
    `${prefix.slice(1)}.${secret}`,
    `${prefix}0.${secret}`,
    `A${prefix.slice(1)}.${secret}`, // upper-case hex is not what newToken writes
    `${prefix.slice(0, 31)}g.${secret}`,
    `${prefix}.${secret.slice(0, 42)}=`,
    `${prefix}.${secret.slice(0, 42)}+`,
    `${prefix}.${secret}\n`,
    ` ${good}`,
    `${good}.${secret}`,
    `${randomUUID()}.${secret}` // the dashed form
  ]
  for (const token of malformed) assert.equal(tokenUserId(token), null, JSON.stringify(token))
})

test('hashToken is the SHA-256 of the whole token', () => {
  // FIPS 180-2's test vector for "abc".
  assert.equal(hashToken('abc').toString('hex'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad')
  const token = newToken(randomUUID())
  assert.equal(hashToken(token).length, 32)
  assert.deepEqual(hashToken(token), hashToken(token))
  assert.notDeepEqual(hashToken(token), hashToken(token.slice(0, -1) + (token.endsWith('A') ? 'B' : 'A')), 'the secret part counts')
})
