import { randomUUID } from 'node:crypto'
import type { Config } from '../config.js'
import { resolveAuditSigner } from '../infra/audit-signer.js'
import type { Database } from '../infra/database.js'
import { listJobRuns } from '../infra/job-runner.js'
import type { Logger } from '../infra/logger.js'
import { createPasswordHasher } from '../infra/passwords.js'
import type { TenantSlots } from '../infra/tenant-slots.js'
import { createAccountService } from './accounts.js'
import type { AuditSink } from './audit-sink.js'
import { createAuditViews } from './audit-views.js'
import { createEntitlementEngine } from './entitlements.js'
import { createEventBudget, createRecordingService } from './recordings.js'
import { createSessionService } from './sessions.js'
import { createTenantAdmin } from './tenant-admin.js'
import { createTenantService } from './tenants.js'

export interface ServiceDeps {
  config: Config
  db: Database
  /** The audit chain writer (the app's counts its latency; scripts pass appendAudit). */
  audit: AuditSink
  log: Logger
  /** Each tenant's share of the pool, for the reads that hold a slot while they run (the app's). */
  slots?: TenantSlots
}

/**
 * The composition root: every service of the app, built once from the configuration. The app
 * decorates them (plugins/services.ts) and routes only read them; the scripts
 * (operator:create, audit:verify) build the same ones.
 */
export async function createServices ({ config, db, audit, log, slots }: ServiceDeps) {
  const graceMs = config.PAST_DUE_GRACE_DAYS * 86_400_000
  const hasher = await createPasswordHasher({
    memoryKiB: config.ARGON2_MEMORY_KIB,
    timeCost: config.ARGON2_TIME_COST,
    parallelism: config.ARGON2_PARALLELISM,
    maxConcurrency: config.ARGON2_MAX_CONCURRENCY
  })
  const sessions = createSessionService({
    db,
    policy: {
      accessTtlS: config.ACCESS_TOKEN_TTL_S,
      refreshTtlS: config.REFRESH_TOKEN_TTL_S,
      idleTimeoutS: config.REFRESH_IDLE_TIMEOUT_S,
      reuseGraceS: config.REFRESH_REUSE_GRACE_S
    }
  })
  const accounts = createAccountService({
    db,
    hasher,
    sessions,
    audit,
    log,
    throttle: {
      maxFailuresPerClient: config.LOGIN_MAX_FAILURES_PER_CLIENT,
      maxFailuresPerAccount: config.LOGIN_MAX_FAILURES_PER_HOUR,
      ceilingDelayMs: config.LOGIN_CEILING_DELAY_MS
    },
    maxSessionsPerUser: config.MAX_SESSIONS_PER_USER
  })
  const entitlements = createEntitlementEngine({ db, ttlMs: config.ENTITLEMENT_CACHE_TTL_MS, graceMs })
  // This process's per-boot token, stamped on every entitlement change it broadcasts.
  const originToken = randomUUID()
  const auditSigner = resolveAuditSigner(config)
  return {
    sessions,
    accounts,
    entitlements,
    originToken,
    tenants: createTenantService({ db, audit, entitlements }),
    tenantAdmin: createTenantAdmin({ db, audit, engine: entitlements, originToken, graceMs, log }),
    recordings: createRecordingService({ db, slots }),
    /** Recording events per tenant per minute, counted in this process. */
    eventBudget: createEventBudget(),
    /** Signs audit checkpoints; null in production without AUDIT_SIGNING_KEY (checkpoints refused). */
    auditSigner,
    auditViews: createAuditViews({ db, signer: auditSigner }),
    jobRuns: { list: (filter: { job: string | null, limit: number }) => listJobRuns(db, filter) }
  }
}

export type Services = Awaited<ReturnType<typeof createServices>>
