import assert from 'node:assert/strict'
import { test } from 'node:test'
import { loadConfig } from '../../config.js'
import { parseCorsOrigins, type OriginMatcher } from '../../infra/cors-origins.js'

const matcher = (raw: string): OriginMatcher => {
  const parsed = parseCorsOrigins(raw)
  assert.ok('match' in parsed && parsed.match, JSON.stringify(parsed))
  return parsed.match
}

test('CORS_ORIGINS: unset or empty means no CORS at all', () => {
  for (const raw of [undefined, '', ' , ']) assert.deepEqual(parseCorsOrigins(raw), { match: null })
})

test('CORS_ORIGINS: exact origins match exactly, scheme and port included', () => {
  const allowed = matcher('https://app.example.com, http://localhost:5173')
  assert.equal(allowed('https://app.example.com'), true)
  assert.equal(allowed('http://localhost:5173'), true)
  for (const origin of ['http://app.example.com', 'https://app.example.com:8443', 'http://localhost:5174', 'https://example.com',
    'https://app.example.com.attacker.test', 'null', '']) {
    assert.equal(allowed(origin), false, origin)
  }
})

test('CORS_ORIGINS: *.domain matches every subdomain, never the domain itself or a look-alike', () => {
  const allowed = matcher('https://*.example.com')
  assert.equal(allowed('https://a.example.com'), true)
  assert.equal(allowed('https://a.b.example.com'), true)
  for (const origin of ['https://example.com', 'https://evilexample.com', 'https://a.example.com.evil.test', 'http://a.example.com',
    'https://a.example.com:444', 'https://a.example.com/path', 'https://user@a.example.com']) {
    assert.equal(allowed(origin), false, origin)
  }
})

test('CORS_ORIGINS: a malformed entry stops the boot with the reason, not a 500 later', () => {
  for (const bad of ['app.example.com', 'https://app.example.com/', 'https://app.example.com/path', '*', 'ftp://x.test', 'https://*']) {
    assert.ok('error' in parseCorsOrigins(bad), bad)
    assert.throws(() => loadConfig({ CORS_ORIGINS: bad }), /CORS_ORIGINS .*not an origin/, bad)
  }
  assert.equal(loadConfig({ CORS_ORIGINS: 'https://app.example.com' }).CORS_ORIGINS, 'https://app.example.com')
})
