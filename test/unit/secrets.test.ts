import assert from 'node:assert/strict'
import { test } from 'node:test'
import { secretMatcher } from '../../infra/secrets.js'

test('one secret: only the exact value matches', () => {
  const matches = secretMatcher('s3cret-value')
  assert.equal(matches('s3cret-value'), true)
  for (const wrong of ['', 's3cret-valu', 's3cret-value ', ' s3cret-value', 'S3CRET-VALUE', 's3cret-value\n', 's3cret-valuex']) {
    assert.equal(matches(wrong), false, JSON.stringify(wrong))
  }
})

test('rotation: every comma-separated secret matches, trimmed; the list itself does not', () => {
  const matches = secretMatcher(' new-secret , old-secret ')
  assert.equal(matches('new-secret'), true)
  assert.equal(matches('old-secret'), true)
  assert.equal(matches(' new-secret '), false, 'the candidate is not trimmed')
  assert.equal(matches('new-secret,old-secret'), false)
  assert.equal(matches('new-secret , old-secret'), false)
})

test('empty entries are ignored: nothing configured matches nothing, not even the empty string', () => {
  for (const configured of ['', ',', ' , ,', '   ']) {
    const matches = secretMatcher(configured)
    for (const candidate of ['', ' ', ',', 'x']) {
      assert.equal(matches(candidate), false, `${JSON.stringify(configured)} / ${JSON.stringify(candidate)}`)
    }
  }
  const matches = secretMatcher(',only,')
  assert.equal(matches('only'), true)
  assert.equal(matches(''), false)
})

test('candidates of any length and content are compared without throwing (digests, not raw bytes)', () => {
  const matches = secretMatcher('a secret with spaces,ünïcødé-🔑')
  assert.equal(matches('a secret with spaces'), true, 'inner spaces are part of the secret')
  assert.equal(matches('ünïcødé-🔑'), true)
  assert.equal(matches('ünïcødé-'), false)
  assert.equal(matches('x'.repeat(100_000)), false)
  assert.equal(matches('\u0000'), false)
  assert.equal(matches('\ud800'), false)
})
