import assert from 'node:assert/strict'
import type { App } from '../../app.js'
import { databaseUrls } from '../../config.js'

export interface Actor { accessToken: string, refreshToken: string, tenant: { id: string, slug: string } | null, user: { id: string, email: string } }

export const bearer = (actor: { accessToken: string }) => ({ authorization: `Bearer ${actor.accessToken}` })

let counter = 0
/** Signs up a fresh user with a fresh tenant; returns the session envelope. */
export async function signupTenant (app: App, name = `Tenant ${++counter}`): Promise<Actor> {
  const email = `owner-${process.pid}-${++counter}-${Date.now()}@example.test`
  const res = await app.inject({ method: 'POST', url: '/api/v1/auth/signup', payload: { email, password: 'correct horse battery', tenantName: name } })
  assert.equal(res.statusCode, 201, res.body)
  return res.json() as Actor
}

/** Creates an operator (as the bootstrap does) and logs in without a tenant. */
export async function loginOperator (app: App, email = `operator-${process.pid}-${++counter}@example.test`): Promise<Actor> {
  await app.accounts.ensureOperator(databaseUrls(app.config).migration, email, 'operator password 1')
  const res = await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email, password: 'operator password 1' } })
  assert.equal(res.statusCode, 200, res.body)
  const actor = res.json() as Actor
  assert.equal(actor.tenant, null)
  return actor
}
