import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { test } from 'node:test'
import { AppError } from '../../errors.js'
import { decodeSessionCursor } from '../../services/sessions.js'

const cursor = (raw: string) => Buffer.from(raw).toString('base64url')

test('decodeSessionCursor: a start time in microseconds and a session id', () => {
  const id = randomUUID()
  assert.deepEqual(decodeSessionCursor(cursor(`1717243200123456~${id}`)), { startedUs: '1717243200123456', id })
  assert.deepEqual(decodeSessionCursor(cursor(`0~${id}`)), { startedUs: '0', id })
  assert.equal(decodeSessionCursor(cursor(`${'9'.repeat(18)}~${id}`)).startedUs, '9'.repeat(18), 'kept as text: beyond 2^53')
})

test('decodeSessionCursor: anything else is a 400 naming querystring.cursor', () => {
  const id = randomUUID()
  const forged = ['', '!!!', `1~${id}`, cursor(`1~${id.toUpperCase()}`), cursor(`${'9'.repeat(19)}~${id}`), cursor(`-1~${id}`),
    cursor(`~${id}`), cursor(`1~${id}x`), cursor(`1~${id.replace(/-/g, '')}`), cursor(`1~${id}\n`), cursor(`1.5~${id}`)]
  for (const c of forged) {
    assert.throws(() => decodeSessionCursor(c), (err: unknown) => {
      assert.ok(err instanceof AppError)
      assert.equal(err.code, 'VALIDATION_FAILED')
      assert.equal(err.status, 400)
      assert.deepEqual(err.extra.errors, [{ field: 'querystring.cursor', message: 'is not a cursor this service issued' }])
      return true
    }, c)
  }
})
