// Helpers shared by the identity tests (auth-*.test.ts, tenant-members.test.ts).
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import pg from 'pg'
import type { App } from '../../app.js'

export const PASSWORD = 'correct horse battery'

/** The session envelope every sign-up, login and refresh answers. */
export interface Envelope {
  accessToken: string
  refreshToken: string
  expiresIn: number
  user: { id: string, email: string }
  tenant: { id: string, name: string, slug: string, role: 'owner' | 'admin' | 'member' } | null
  session: { id: string }
}

type Response = Awaited<ReturnType<App['inject']>>

/** An email no other test uses. */
export const uniqueEmail = (tag = 'user') => `${tag}-${randomBytes(5).toString('hex')}@example.test`

/** The Authorization header for an access token (or an envelope). */
export const bearer = (token: string | { accessToken: string }) =>
  ({ authorization: `Bearer ${typeof token === 'string' ? token : token.accessToken}` })

export const sha256 = (token: string) => createHash('sha256').update(token).digest()

/** Signs up a fresh user with a fresh tenant and returns the envelope (asserts 201). */
export async function signup (app: App, input: { email?: string, password?: string, tenantName?: string } = {}): Promise<Envelope> {
  const payload = { email: input.email ?? uniqueEmail('owner'), password: input.password ?? PASSWORD, tenantName: input.tenantName ?? `Tenant ${randomBytes(3).toString('hex')}` }
  const res = await app.inject({ method: 'POST', url: '/api/v1/auth/signup', payload })
  assert.equal(res.statusCode, 201, res.body)
  return res.json() as Envelope
}

export function login (app: App, body: { email: string, password?: string, tenant?: string }, headers: Record<string, string> = {}) {
  return app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { password: PASSWORD, ...body }, headers })
}

export function refresh (app: App, refreshToken: string) {
  return app.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refreshToken } })
}

/** GET /api/v1/tenant: the cheapest tenant route, to see whether an access token still works. */
export async function tenantStatus (app: App, token: string | { accessToken: string }) {
  return (await app.inject({ url: '/api/v1/tenant', headers: bearer(token) })).statusCode
}

/** GET /api/v1/auth/sessions: works for any session (operators too). */
export async function sessionStatus (app: App, token: string | { accessToken: string }) {
  return (await app.inject({ url: '/api/v1/auth/sessions', headers: bearer(token) })).statusCode
}

/** Asserts an RFC 9457 problem with this status and code, and returns its body. */
export { adminClient } from '../helper.js'

export function assertProblem (res: Response, status: number, code: string) {
  assert.equal(res.statusCode, status, res.body)
  assert.match(String(res.headers['content-type']), /^application\/problem\+json/)
  const body = res.json()
  assert.equal(body.status, status)
  assert.equal(body.code, code)
  assert.equal(typeof body.requestId, 'string')
  assert.doesNotMatch(res.body, /\bat .+\.ts:\d+|SELECT |INSERT |UPDATE /, 'no stack or SQL on the wire')
  return body as { code: string, detail: string, errors?: Array<{ field: string, message: string }> }
}

/** Polls until the bootstrap operator exists (it is created in the background after ready). */
export async function operatorExists (admin: pg.Client, email: string) {
  const { rows } = await admin.query<{ is_operator: boolean }>('SELECT is_operator FROM users WHERE lower(email) = lower($1)', [email])
  return rows[0]?.is_operator === true
}

export function median (values: number[]) {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]!
}
