// The data the bench reads: tenants with a session each, ten members readable under RLS per
// tenant, and a contract that lifts the per-tenant limits. Everything through the service's
// own API (the operator is created in-process with accounts.ensureOperator).
import { randomBytes } from 'node:crypto'

export const PASSWORD = 'bench password'

export interface BenchTenant {
  id: string
  ownerEmail: string
  accessToken: string
}

export interface Seed {
  operatorToken: string
  tenants: BenchTenant[]
  /** The members' accounts (password PASSWORD) and the tenant each was added to: logins as them leave the owners' sessions alone. */
  members: Array<{ email: string, tenantId: string }>
}

interface Envelope {
  accessToken: string
  refreshToken: string
  user: { id: string, email: string }
  tenant: { id: string } | null
}

const email = (kind: string) => `bench-${kind}-${randomBytes(6).toString('hex')}@example.test`

/** At most `n` of `fn` at a time over `items`, results in order. */
export async function parallel<T, R> (items: T[], n: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length)
  let next = 0
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, async () => {
    while (next < items.length) {
      const i = next++
      out[i] = await fn(items[i]!, i)
    }
  }))
  return out
}

export function client (base: string) {
  return async function call<T = unknown> (
    method: string, path: string, body?: unknown, token?: string, expect = [200, 201, 202, 204]
  ): Promise<T> {
    const res = await fetch(base + path, {
      method,
      headers: {
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...(token ? { authorization: `Bearer ${token}` } : {})
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {})
    })
    const text = await res.text()
    if (!expect.includes(res.status)) throw new Error(`${method} ${path} → ${res.status}: ${text.slice(0, 500)}`)
    return (text ? JSON.parse(text) : null) as T
  }
}

export async function seed ({ base, operatorEmail, tenants: tenantCount, membersPerTenant }: {
  base: string
  operatorEmail: string
  tenants: number
  membersPerTenant: number
}): Promise<Seed> {
  const call = client(base)
  const op = await call<Envelope>('POST', '/api/v1/auth/login', { email: operatorEmail, password: PASSWORD })

  const owners = await parallel(Array.from({ length: tenantCount }, (_, i) => i), 6, i =>
    call<Envelope>('POST', '/api/v1/auth/signup', { email: email('owner'), password: PASSWORD, tenantName: `Bench ${i}` }))

  // Limits the bench must not hit: the per-tenant API limit, seats, and recording volume.
  const now = Date.now()
  await parallel(owners, 4, o => call('PUT', `/api/v1/operator/tenants/${o.tenant!.id}/contract`, {
    features: { api_requests_per_minute: 10_000_000, seats: 1000, recording_mode: true, recording_events_per_minute: 1_000_000_000 },
    startsAt: new Date(now - 86_400_000).toISOString(),
    endsAt: new Date(now + 365 * 86_400_000).toISOString()
  }, op.accessToken))

  // Members are users of their own (each signup also makes a tenant of theirs), then added.
  const extra = membersPerTenant - 1
  const members = await parallel(Array.from({ length: tenantCount * extra }, (_, i) => i), 6, i =>
    call<Envelope>('POST', '/api/v1/auth/signup', { email: email('member'), password: PASSWORD, tenantName: `Bench member ${i}` }))
  await parallel(members, 6, (m, i) =>
    call('POST', '/api/v1/tenant/members', { email: m.user.email, role: 'member' }, owners[Math.floor(i / extra)]!.accessToken))

  const tenants = owners.map(o => ({ id: o.tenant!.id, ownerEmail: o.user.email, accessToken: o.accessToken }))
  for (const t of tenants) {
    const { members: list } = await call<{ members: unknown[] }>('GET', '/api/v1/tenant/members', undefined, t.accessToken)
    if (list.length !== membersPerTenant) throw new Error(`tenant ${t.id} reads ${list.length} members, expected ${membersPerTenant}`)
  }
  const added = members.map((m, i) => ({ email: m.user.email, tenantId: owners[Math.floor(i / extra)]!.tenant!.id }))
  return { operatorToken: op.accessToken, tenants, members: added }
}

/** `n` fresh sessions (one login each, argon2 included), for the refresh load. */
export async function refreshTokens (base: string, tenants: BenchTenant[], n: number): Promise<string[]> {
  const call = client(base)
  return parallel(Array.from({ length: n }, (_, i) => i), 8, async i => {
    const login = { email: tenants[i % tenants.length]!.ownerEmail, password: PASSWORD }
    return (await call<Envelope>('POST', '/api/v1/auth/login', login)).refreshToken
  })
}
