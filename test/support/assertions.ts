import assert from 'node:assert/strict'
import type { App } from '../../app.js'
import type { ErrorCode, Problem } from '../../errors.js'

type Response = Awaited<ReturnType<App['inject']>>

/**
 * Asserts an RFC 9457 problem with this status and code, its members in the documented order,
 * and no stack or SQL on the wire; returns its body.
 */
export function assertProblem (res: Response, status: number, code: ErrorCode): Problem {
  assert.equal(res.statusCode, status, res.body)
  assert.match(String(res.headers['content-type']), /^application\/problem\+json/)
  const body = res.json() as Problem
  assert.deepEqual(Object.keys(body).slice(0, 6), ['type', 'title', 'status', 'code', 'detail', 'requestId'])
  assert.equal(body.status, status)
  assert.equal(body.code, code)
  assert.match(body.type, /^urn:govula:error:/)
  assert.equal(typeof body.requestId, 'string')
  assert.doesNotMatch(res.body, /\bat .+\.ts:\d+|SELECT |INSERT |UPDATE /, 'no stack or SQL on the wire')
  return body
}
