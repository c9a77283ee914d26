// Helpers shared by the fault tests (test/faults-*.test.ts).
import assert from 'node:assert/strict'
import type { App } from '../../app.js'
import { bearer, type Actor } from './actors.js'

/** Gives a tenant a running operator contract with these features (for an hour). */
export async function setContract (app: App, operator: Actor, tenantId: string, features: Record<string, unknown>) {
  const res = await app.inject({
    method: 'PUT',
    url: `/api/v1/operator/tenants/${tenantId}/contract`,
    headers: bearer(operator),
    payload: { features, startsAt: new Date(Date.now() - 60_000).toISOString(), endsAt: new Date(Date.now() + 3_600_000).toISOString() }
  })
  assert.equal(res.statusCode, 200, res.body)
}

/** What a load generator saw of one request. */
export interface Outcome {
  kind: string
  sentAt: number
  doneAt: number
  status: number
  contentType: string
  code?: string
  retryAfter?: string
  /** A network error instead of a response (the server went away). */
  error?: string
}

/** A response that is not 2xx must be a 503 problem+json with code SERVICE_UNAVAILABLE and Retry-After. */
export function isClean503 (o: Outcome) {
  return o.status === 503 && /^application\/problem\+json/.test(o.contentType) && o.code === 'SERVICE_UNAVAILABLE' && o.retryAfter === '1'
}

/** A one-line summary of outcomes by status, for the test log. */
export function tally (outcomes: Outcome[]) {
  const counts = new Map<string, number>()
  for (const o of outcomes) {
    const key = o.error ? `error(${o.error})` : String(o.status)
    counts.set(key, (counts.get(key) ?? 0) + 1)
  }
  return [...counts].sort().map(([k, n]) => `${k}×${n}`).join(' ')
}
