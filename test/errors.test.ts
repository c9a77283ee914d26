import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Type } from '@sinclair/typebox'
import { AppError } from '../errors.js'
import { buildTestApp, captureLogs, createTestDatabase, testConfig } from './support/app.js'
import { assertProblem } from './support/assertions.js'

const db = await createTestDatabase()
const logs = captureLogs()
const app = await buildTestApp(testConfig(db, { LOG_LEVEL: 'info', BODY_LIMIT: 2048 }), {
  logs,
  setup (app) {
    app.post('/echo', {
      config: { auth: false },
      schema: {
        body: Type.Object({ email: Type.String({ format: 'email' }), n: Type.Integer({ minimum: 1 }) }, { additionalProperties: false }),
        response: { 200: Type.Object({ ok: Type.Boolean() }) }
      }
    }, async () => ({ ok: true }))
    app.get('/boom', { config: { auth: false } }, async () => { throw new Error('SELECT secret FROM internals failed at /srv/app.ts:12') })
    app.get('/conflict', { config: { auth: false } }, async () => { throw new AppError('CONFLICT', 'already there') })
    app.get('/db-down', { config: { auth: false } }, async () => {
      throw Object.assign(new Error('connect ECONNREFUSED 10.0.0.1:5432'), { code: 'ECONNREFUSED' })
    })
  }
})

test('unknown route: 404 problem+json', async () => {
  assertProblem(await app.inject('/nowhere'), 404, 'NOT_FOUND')
})

test('malformed URL: 400 problem+json', async () => {
  assertProblem(await app.inject('/%zz'), 400, 'BAD_REQUEST')
})

test('malformed JSON: 400', async () => {
  const res = await app.inject({ method: 'POST', url: '/echo', headers: { 'content-type': 'application/json' }, payload: '{"email": ' })
  assertProblem(res, 400, 'MALFORMED_JSON')
})

test('oversize body: 413', async () => {
  const res = await app.inject({
    method: 'POST',
    url: '/echo',
    headers: { 'content-type': 'application/json' },
    payload: JSON.stringify({ email: 'a@b.co', pad: 'x'.repeat(5000) })
  })
  assertProblem(res, 413, 'PAYLOAD_TOO_LARGE')
})

test('unsupported media type: 415', async () => {
  const res = await app.inject({ method: 'POST', url: '/echo', headers: { 'content-type': 'text/xml' }, payload: '<a/>' })
  assertProblem(res, 415, 'UNSUPPORTED_MEDIA_TYPE')
})

test('validation errors name the field', async () => {
  const bad = assertProblem(await app.inject({ method: 'POST', url: '/echo', payload: { email: 'nope', n: 1 } }), 400, 'VALIDATION_FAILED')
  assert.match(bad.detail, /^body\.email /)
  assert.equal(bad.errors![0]!.field, 'body.email')
  const missing = assertProblem(await app.inject({ method: 'POST', url: '/echo', payload: { email: 'a@b.co' } }), 400, 'VALIDATION_FAILED')
  assert.equal(missing.errors![0]!.field, 'body.n')
  const unknown = assertProblem(
    await app.inject({ method: 'POST', url: '/echo', payload: { email: 'a@b.co', n: 1, admin: true } }), 400, 'VALIDATION_FAILED')
  assert.equal(unknown.errors![0]!.field, 'body.admin')
})

test('an AppError keeps its code and detail', async () => {
  const body = assertProblem(await app.inject('/conflict'), 409, 'CONFLICT')
  assert.equal(body.detail, 'already there')
})

test('an unexpected error is a 500 that leaks no message, stack or SQL', async () => {
  const res = await app.inject('/boom')
  const body = assertProblem(res, 500, 'INTERNAL')
  assert.doesNotMatch(res.body, /SELECT|secret|\.ts:|at /)
  assert.ok(logs.lines.some(l => l.reqId === body.requestId && l.msg === 'unhandled error'), 'the cause is logged against the request id')
})

test('a database outage is a 503 with Retry-After, not a 500', async () => {
  const res = await app.inject('/db-down')
  assertProblem(res, 503, 'SERVICE_UNAVAILABLE')
  assert.equal(res.headers['retry-after'], '1')
  assert.doesNotMatch(res.body, /10\.0\.0\.1/)
})

test('request ids: a sane X-Request-Id is kept and echoed, a hostile one replaced', async () => {
  const kept = await app.inject({ url: '/nowhere', headers: { 'x-request-id': 'trace-123' } })
  assert.equal(kept.headers['x-request-id'], 'trace-123')
  assert.equal(kept.json().requestId, 'trace-123')
  const replaced = await app.inject({ url: '/nowhere', headers: { 'x-request-id': 'a"b\n'.repeat(30) } })
  assert.match(String(replaced.headers['x-request-id']), /^[0-9a-f-]{36}$/)
})

test('logs are JSON with the request id, and secrets are redacted', async () => {
  app.log.info({ password: 'hunter22', refreshToken: 'rt-secret', req: { headers: { authorization: 'Bearer abc' } } }, 'probe')
  await app.inject({ url: '/nowhere', headers: { 'x-request-id': 'log-check' } })
  const text = logs.lines.map(l => JSON.stringify(l)).join('\n')
  assert.doesNotMatch(text, /hunter22|rt-secret|Bearer abc/)
  assert.ok(logs.lines.some(l => l.reqId === 'log-check' && l.msg === 'request completed' && l.statusCode === 404))
})
