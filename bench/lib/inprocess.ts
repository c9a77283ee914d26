// The measures taken inside the bench process: cached entitlement checks and broadcast
// propagation, and audit chain appends (1 and 10 chains). bench/entitlements.ts and
// bench/audit.ts run them on their own.
import { randomBytes, randomUUID } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import pg from 'pg'
import { buildApp } from '../../app.js'
import type { Config } from '../../config.js'
import { appendAudit, verifyChain, type AuditEntry } from '../../services/audit.js'
import { createDatabase } from '../../infra/database.js'
import { createContextSigner, loadContextKey } from '../../infra/request-context.js'
import { percentile } from '../support.js'
import { PASSWORD } from './seed.js'

type BenchDb = { runtimeUrl: string, ownerUrl: string, config (overrides?: Partial<Config>): Config }

export interface EntitlementResult {
  cachedChecksPerS: number
  coldCheckP50Ms: number
  coldCheckP99Ms: number
  propagationP50Ms: number
  propagationP99Ms: number
  propagationSamples: number
}

/** Creates the operator lib/seed.ts logs in as (accounts.ensureOperator on an in-process app). */
export async function ensureOperator (db: BenchDb, email: string) {
  const app = await buildApp(db.config({ LOG_LEVEL: 'error' }))
  try {
    await app.ready()
    await app.accounts.ensureOperator(db.ownerUrl, email, PASSWORD)
  } finally {
    await app.close()
  }
}

export async function entitlementBench (
  db: BenchDb, { checks, propagations }: { checks: number, propagations: number }
): Promise<EntitlementResult> {
  // Errors only: a readiness warning of an in-process instance would land inside the table.
  const config = db.config({ ENTITLEMENT_BROADCAST_ENABLED: true, LOG_LEVEL: 'error' })
  const apps = [await buildApp(config), await buildApp(config), await buildApp(config)]
  try {
    await Promise.all(apps.map(a => a.ready()))
    const [a, b, c] = apps as [typeof apps[0], typeof apps[0], typeof apps[0]]
    const deadline = Date.now() + 10_000
    while (!apps.every(x => x.entitlementBroadcast?.connected)) {
      if (Date.now() > deadline) throw new Error('entitlement broadcast did not connect')
      await new Promise(resolve => setTimeout(resolve, 20))
    }
    const email = `bench-ent-${randomBytes(6).toString('hex')}@example.test`
    const signup = await a.inject({
      method: 'POST', url: '/api/v1/auth/signup', payload: { email, password: PASSWORD, tenantName: 'Bench entitlements' }
    })
    if (signup.statusCode !== 201) throw new Error(`signup: ${signup.body}`)
    const tenantId = signup.json().tenant.id as string
    const operatorEmail = `bench-ent-op-${randomBytes(4).toString('hex')}@example.test`
    await a.accounts.ensureOperator(db.ownerUrl, operatorEmail, PASSWORD)
    const op = (await a.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: operatorEmail, password: PASSWORD } })).json()
    const setPlan = (plan: string) => a.inject({
      method: 'PUT',
      url: `/api/v1/operator/tenants/${tenantId}/plan`,
      headers: { authorization: `Bearer ${op.accessToken}` },
      payload: { plan }
    })

    // 1. Cached checks in-process.
    const engine = a.entitlements
    await engine.check(tenantId, 'seats')
    let t0 = performance.now()
    for (let i = 0; i < checks; i++) await engine.check(tenantId, 'seats')
    const cachedChecksPerS = checks / ((performance.now() - t0) / 1000)

    // 2. Cold checks: one query under the tenant's RLS each.
    const cold: number[] = []
    for (let i = 0; i < 300; i++) {
      engine.invalidate(tenantId)
      t0 = performance.now()
      await engine.check(tenantId, 'seats')
      cold.push(performance.now() - t0)
    }
    cold.sort((x, y) => x - y)

    // 3. Propagation: from the operator's request on A to the invalidation on B and C.
    const propagation: number[] = []
    for (let i = 0; i < propagations; i++) {
      const seen = [b, c].map(x =>
        new Promise<number>(resolve => x.entitlements.events.once('entitlement.changed', () => resolve(performance.now()))))
      const start = performance.now()
      const res = await setPlan(i % 2 ? 'pro' : 'free')
      if (res.statusCode !== 200) throw new Error(res.body)
      for (const at of await Promise.all(seen)) propagation.push(at - start)
    }
    propagation.sort((x, y) => x - y)
    return {
      cachedChecksPerS,
      coldCheckP50Ms: percentile(cold, 50),
      coldCheckP99Ms: percentile(cold, 99),
      propagationP50Ms: percentile(propagation, 50),
      propagationP99Ms: percentile(propagation, 99),
      propagationSamples: propagation.length
    }
  } finally {
    await Promise.all(apps.map(x => x.close()))
  }
}

export interface AuditResult { chains: number, appendsPerS: number, p50Ms: number, p99Ms: number, verified: boolean }

/**
 * `concurrency` appenders for `seconds`, worker w on chain w % chains, each append its own
 * transaction through the runtime pool (as a request would). The chains must verify after:
 * a fast but forked chain is no result.
 */
export async function auditBench (
  db: BenchDb, { chains, seconds, concurrency, poolSize }: { chains: number, seconds: number, concurrency: number, poolSize: number }
): Promise<AuditResult> {
  const pool = new pg.Pool({ connectionString: db.runtimeUrl, max: poolSize })
  pool.on('error', () => {})
  const database = createDatabase(pool, await loadContextKey(createContextSigner(), db.ownerUrl))
  try {
    const tenants = Array.from({ length: chains }, () => randomUUID())
    const entry = (i: number): AuditEntry => ({
      actor: { type: 'user', id: randomUUID(), email: 'bench@example.test' },
      action: 'member.role_changed',
      target: { type: 'user', id: randomUUID() },
      data: { i, from: 'member', to: 'admin' }
    })
    const deadline = performance.now() + seconds * 1000
    const latencies: number[] = []
    await Promise.all(Array.from({ length: concurrency }, async (_, w) => {
      const tenant = tenants[w % tenants.length]!
      while (performance.now() < deadline) {
        const t0 = performance.now()
        await database.withTenant(tenant, c => appendAudit(c, 'audit_log', tenant, entry(w)))
        latencies.push(performance.now() - t0)
      }
    }))
    latencies.sort((a, b) => a - b)
    let verified = true
    for (const t of tenants) {
      const v = await database.withTenant(t, c => verifyChain(c, 'audit_log', t))
      if (!v.valid) verified = false
    }
    return { chains, appendsPerS: latencies.length / seconds, p50Ms: percentile(latencies, 50), p99Ms: percentile(latencies, 99), verified }
  } finally {
    await pool.end()
  }
}
