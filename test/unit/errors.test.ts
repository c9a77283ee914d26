import assert from 'node:assert/strict'
import { test } from 'node:test'
import {
  AppError, conflict, errorCatalog, isConnectionRefused, isDatabaseUnavailable, isQueryTimeout, notFound, problem, problemType,
  type ErrorCode
} from '../../errors.js'

const withCode = (message: string, code?: string) => Object.assign(new Error(message), code === undefined ? {} : { code })

test('the catalogue: every code an error status with a title, and a type URN of its own', () => {
  const codes = Object.keys(errorCatalog) as ErrorCode[]
  for (const code of codes) {
    const { status, title } = errorCatalog[code]
    assert.ok(status >= 400 && status <= 599, code)
    assert.ok(title.length > 0, code)
    assert.match(problemType(code), /^urn:govula:error:[a-z]+(?:-[a-z]+)*$/, code)
  }
  assert.equal(new Set(codes.map(problemType)).size, codes.length)
  assert.equal(problemType('AUTH_INVALID_TOKEN'), 'urn:govula:error:auth-invalid-token')
})

test('problem(): the RFC 9457 body, fields in order, from the catalogue', () => {
  const body = problem('RATE_LIMITED', 'slow down', 'req-1')
  assert.deepEqual(body, {
    type: 'urn:govula:error:rate-limited',
    title: 'Too many requests',
    status: 429,
    code: 'RATE_LIMITED',
    detail: 'slow down',
    requestId: 'req-1'
  })
  assert.deepEqual(Object.keys(body), ['type', 'title', 'status', 'code', 'detail', 'requestId'])
})

test('AppError carries its code, the catalogue\'s status, a detail (the title by default) and extras', () => {
  const plain = new AppError('NOT_FOUND')
  assert.ok(plain instanceof Error)
  assert.deepEqual([plain.name, plain.code, plain.status, plain.message, plain.extra], ['AppError', 'NOT_FOUND', 404, 'Not found', {}])
  const extra = { headers: { 'retry-after': '3' }, errors: [{ field: 'body.email', message: 'is taken' }] }
  const rich = new AppError('RATE_LIMITED', 'try later', extra)
  assert.deepEqual([rich.status, rich.message, rich.extra], [429, 'try later', extra])
  assert.deepEqual([notFound().message, notFound('tenant').message, notFound('tenant').status],
    ['resource not found', 'tenant not found', 404])
  assert.deepEqual([conflict('taken').code, conflict('taken').status, conflict('taken').message], ['CONFLICT', 409, 'taken'])
})

test('isDatabaseUnavailable: connection SQLSTATEs, socket errors, pool and driver messages, query timeouts; nothing else', () => {
  const unavailable = [
    withCode('terminating connection due to administrator command', '57P01'),
    withCode('x', '57P02'), withCode('the database system is starting up', '57P03'),
    withCode('canceling statement due to statement timeout', '57014'), withCode('sorry, too many clients already', '53300'),
    withCode('x', '08000'), withCode('x', '08001'), withCode('x', '08003'), withCode('x', '08006'),
    withCode('connect ECONNREFUSED 127.0.0.1:5432', 'ECONNREFUSED'), withCode('x', 'ECONNRESET'), withCode('x', 'ETIMEDOUT'),
    withCode('x', 'EPIPE'), withCode('x', 'ENOTFOUND'), withCode('x', 'EHOSTUNREACH'),
    withCode('Connection terminated unexpectedly'), withCode('timeout exceeded when trying to connect'),
    withCode('Client has encountered a connection error and is not queryable'), withCode('connection ended unexpectedly'),
    withCode('Query read timeout')
  ]
  for (const err of unavailable) assert.equal(isDatabaseUnavailable(err), true, `${(err as { code?: string }).code} ${err.message}`)
  const other = [
    withCode('duplicate key value violates unique constraint', '23505'), withCode('syntax error', '42601'),
    withCode('permission denied', '42501'), withCode('boom'), new TypeError('x is undefined'),
    { code: 'ECONNREFUSED', message: 'Connection terminated' }, 'ECONNREFUSED', null, undefined, withCode('x', '57')
  ]
  for (const err of other) assert.equal(isDatabaseUnavailable(err), false, String((err as { code?: string })?.code ?? err))
})

test('isConnectionRefused: the server is not accepting connections at all', () => {
  for (const code of ['ECONNREFUSED', '57P03', 'ENOTFOUND', 'EHOSTUNREACH']) {
    assert.equal(isConnectionRefused(withCode('x', code)), true, code)
  }
  for (const code of ['57P01', 'ECONNRESET', '53300', '57014', undefined]) {
    assert.equal(isConnectionRefused(withCode('x', code)), false, String(code))
  }
  assert.equal(isConnectionRefused({ code: 'ECONNREFUSED' }), false, 'only an Error')
})

test('isQueryTimeout: pg\'s client-side query timeout, exactly', () => {
  assert.equal(isQueryTimeout(new Error('Query read timeout')), true)
  assert.equal(isQueryTimeout(new Error('Query read timeout exceeded')), false)
  assert.equal(isQueryTimeout(withCode('canceling statement due to statement timeout', '57014')), false)
  assert.equal(isQueryTimeout('Query read timeout'), false)
})
