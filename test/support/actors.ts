// Who calls the API in a test: users with tenants, operators, their sessions and what an
// operator grants a tenant.
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import type pg from 'pg'
import type { App } from '../../app.js'
import { databaseUrls } from '../../config.js'
import type { SessionEnvelope } from '../../services/accounts.js'

export const PASSWORD = 'correct horse battery'
const OPERATOR_PASSWORD = 'operator password 1'

/** An email no other test uses. */
export const uniqueEmail = (tag = 'user') => `${tag}-${randomBytes(5).toString('hex')}@example.test`

/** The Authorization header for an access token (or an envelope). */
export const bearer = (token: string | { accessToken: string }) =>
  ({ authorization: `Bearer ${typeof token === 'string' ? token : token.accessToken}` })

/** A token as the server stores it. */
export const sha256 = (token: string) => createHash('sha256').update(token).digest()

export interface SignupInput { email?: string, password?: string, tenantName?: string }

const SIGNUP = '/api/v1/auth/signup'
const signupBody = (input: SignupInput) => ({
  email: input.email ?? uniqueEmail('owner'),
  password: input.password ?? PASSWORD,
  tenantName: input.tenantName ?? `Tenant ${randomBytes(3).toString('hex')}`
})

/** Signs up a fresh user with a fresh tenant and returns the envelope (asserts 201). */
export async function signup (app: App, input: SignupInput = {}): Promise<SessionEnvelope> {
  const res = await app.inject({ method: 'POST', url: SIGNUP, payload: signupBody(input) })
  assert.equal(res.statusCode, 201, res.body)
  return res.json() as SessionEnvelope
}

/** The same over real HTTP, to the server at `base` (a balancer, a replica). */
export async function signupAt (base: string, input: SignupInput = {}): Promise<SessionEnvelope> {
  const res = await fetch(base + SIGNUP, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(signupBody(input)),
    signal: AbortSignal.timeout(10_000)
  })
  const text = await res.text()
  assert.equal(res.status, 201, text)
  return JSON.parse(text) as SessionEnvelope
}

export function login (app: App, body: { email: string, password?: string, tenant?: string }, headers: Record<string, string> = {}) {
  return app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { password: PASSWORD, ...body }, headers })
}

export function refresh (app: App, refreshToken: string) {
  return app.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refreshToken } })
}

/** POST /api/v1/auth/password as `user`: the answer, for the caller to assert. */
export const changePassword = (app: App, user: { accessToken: string }, currentPassword: string, newPassword: string) =>
  app.inject({ method: 'POST', url: '/api/v1/auth/password', headers: bearer(user), payload: { currentPassword, newPassword } })

/** POST /api/v1/tenant/members as `owner`: the answer, for the caller to assert. */
export const addMember = (app: App, owner: { accessToken: string }, email: string, role = 'member') =>
  app.inject({ method: 'POST', url: '/api/v1/tenant/members', headers: bearer(owner), payload: { email, role } })

/** Creates an operator (as the bootstrap does) and logs in without a tenant. */
export async function loginOperator (app: App, email = uniqueEmail('operator')): Promise<SessionEnvelope> {
  await app.accounts.ensureOperator(databaseUrls(app.config).migration, email, OPERATOR_PASSWORD)
  const res = await login(app, { email, password: OPERATOR_PASSWORD })
  assert.equal(res.statusCode, 200, res.body)
  const operator = res.json() as SessionEnvelope
  assert.equal(operator.tenant, null)
  return operator
}

/** Whether the bootstrap operator exists yet (it is created in the background after ready): poll it. */
export async function operatorExists (admin: pg.Client, email: string) {
  const { rows } = await admin.query<{ is_operator: boolean }>('SELECT is_operator FROM users WHERE lower(email) = lower($1)', [email])
  return rows[0]?.is_operator === true
}

/** GET /api/v1/tenant: the cheapest tenant route, to see whether an access token still works. */
export async function tenantStatus (app: App, token: string | { accessToken: string }) {
  return (await app.inject({ url: '/api/v1/tenant', headers: bearer(token) })).statusCode
}

/** GET /api/v1/auth/sessions: works for any session (operators too). */
export async function sessionStatus (app: App, token: string | { accessToken: string }) {
  return (await app.inject({ url: '/api/v1/auth/sessions', headers: bearer(token) })).statusCode
}

/** Gives a tenant a running operator contract with these features (for an hour). */
export async function setContract (app: App, operator: { accessToken: string }, tenantId: string, features: Record<string, unknown>) {
  const res = await app.inject({
    method: 'PUT',
    url: `/api/v1/operator/tenants/${tenantId}/contract`,
    headers: bearer(operator),
    payload: {
      features,
      startsAt: new Date(Date.now() - 60_000).toISOString(),
      endsAt: new Date(Date.now() + 3_600_000).toISOString()
    }
  })
  assert.equal(res.statusCode, 200, res.body)
}

/** The tenant's api_requests_per_minute, set through an operator contract. */
export const setTenantLimit = (app: App, operator: { accessToken: string }, tenantId: string, perMinute: number) =>
  setContract(app, operator, tenantId, { api_requests_per_minute: perMinute })

/**
 * A fresh tenant with recording granted through a running contract (the free plan has none of
 * it), at 1,000,000 events a minute unless `features` says otherwise. Limits are numbers: the
 * contract route reads null (unlimited) as 0 (its Integer|Null union coerces null to 0 under
 * coerceTypes).
 */
export async function recordingTenant (app: App, operator: { accessToken: string }, features: Record<string, unknown> = {}) {
  const tenant = await signup(app)
  await setContract(app, operator, tenant.tenant!.id, { recording_mode: true, recording_events_per_minute: 1_000_000, ...features })
  return tenant
}
