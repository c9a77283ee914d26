import assert from 'node:assert/strict'
import { test } from 'node:test'
import fc from 'fast-check'
import { normaliseEmail, slugify } from '../../services/accounts.js'

// A tenant's slug is derived from its display name at sign-up and is a login key ("tenant": id or slug).
const URL_SAFE = /^[a-z0-9]+(?:-[a-z0-9]+)*$/

test('slugify: lower-case ASCII words joined by single dashes, nothing at either end', () => {
  assert.equal(slugify('Acme Corp!'), 'acme-corp')
  assert.equal(slugify('  -Acme--Corp-  '), 'acme-corp')
  assert.equal(slugify('R&D / Ops 2025'), 'r-d-ops-2025')
  assert.equal(slugify('already-a-slug'), 'already-a-slug')
  assert.equal(slugify('ＡＣＭＥ　Ｃｏｒｐ'), 'acme-corp', 'full-width forms fold (NFKD)')
  assert.equal(slugify('ﬁne ﬂow'), 'fine-flow', 'ligatures fold')
  assert.equal(slugify('x²'), 'x2')
  assert.equal(slugify('Café Müller'), 'cafe-muller', 'accents go, their letters stay')
  assert.equal(slugify('Łódź Ærø'), 'odz-r', 'letters with no decomposition are not URL-safe: they go')
})

test('slugify: a name with nothing URL-safe in it becomes "tenant"', () => {
  for (const name of ['', ' ', '!!!', '---', '日本語', '🚀', '\u0000']) assert.equal(slugify(name), 'tenant', JSON.stringify(name))
})

test('slugify: at most 40 characters, never ending in a dash after the cut', () => {
  assert.equal(slugify('a'.repeat(100)), 'a'.repeat(40))
  assert.equal(slugify(`${'a'.repeat(39)} b`), 'a'.repeat(39), 'the cut lands after a dash: the dash goes')
  assert.equal(slugify(`${'a'.repeat(38)} bc`), `${'a'.repeat(38)}-b`)
  const long = 'The Quite Extraordinarily Long Name Of A Company, Incorporated'
  const slug = slugify(long)
  assert.ok(slug.length <= 40)
  assert.match(slug, URL_SAFE)
  assert.ok('the-quite-extraordinarily-long-name-of-a-company-incorporated'.startsWith(slug))
})

test('slugify: whatever the input, the slug is URL-safe and at most 40 characters', () => {
  const check = (name: string) => {
    const slug = slugify(name)
    assert.match(slug, URL_SAFE, JSON.stringify(name))
    assert.ok(slug.length <= 40, JSON.stringify(name))
    assert.equal(slugify(slug), slug, 'a slug is its own slug')
  }
  for (const name of ['Café', 'Straße', 'Ærø', 'a\u0301', 'Ünïcødé Gmbh', '\ud800x', 'tab\tnew\nline', '--', 'a--b', '%20']) check(name)
  fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 80 }), check), { numRuns: 500 })
  fc.assert(fc.property(fc.string({ unit: 'binary-ascii', maxLength: 80 }), check), { numRuns: 500 })
})

test('normaliseEmail: trimmed and lower-cased', () => {
  assert.equal(normaliseEmail('  Alice@Example.COM \n'), 'alice@example.com')
  assert.equal(normaliseEmail('bob@example.com'), 'bob@example.com')
})
