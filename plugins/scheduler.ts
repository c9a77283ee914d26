import { hostname } from 'node:os'
import fp from 'fastify-plugin'
import fastifySchedule from '@fastify/schedule'
import { AsyncTask, SimpleIntervalJob } from 'toad-scheduler'
import { createJobRunner, type Job, type JobRunner } from '../infra/job-runner.js'
import { purgeSessions } from '../jobs/purge-sessions.js'
import { checkpointAuditChains } from '../jobs/audit-checkpoint.js'
import { resolveAuditSigner } from '../infra/audit-signer.js'
import { purgeExpiredRecordings } from '../services/recordings.js'
import { createTenantAdmin } from '../services/tenant-admin.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The jobs this instance knows; add to it before ready (the scheduler reads it then). */
    jobs: Map<string, Job>
    jobRunner: JobRunner
  }
}

/**
 * Scheduled jobs. Every run goes through the job runner's lease, so each tick runs once
 * across replicas, whether several have ENABLE_SCHEDULER=1 or an external cron calls the
 * internal mount. On close: no new ticks, then the runs in flight finish or are aborted at
 * JOB_SHUTDOWN_DEADLINE_MS, all before the pool ends.
 */
export default fp(async (fastify) => {
  const { config, db, log } = fastify
  const instance = `${hostname()}:${process.pid}:${fastify.originToken.slice(0, 8)}`
  const admin = createTenantAdmin({ db, audit: fastify.audit, engine: fastify.entitlements, originToken: fastify.originToken, graceMs: config.PAST_DUE_GRACE_DAYS * 86_400_000, log })
  const jobs = new Map<string, Job>([
    ['purge-sessions', { intervalMs: config.JOB_PURGE_SESSIONS_INTERVAL_S * 1000, run: (signal) => purgeSessions({ db, reuseGraceS: config.REFRESH_REUSE_GRACE_S }, signal) }],
    ['lifecycle-transitions', { intervalMs: config.JOB_LIFECYCLE_INTERVAL_S * 1000, run: (signal) => admin.applyDueTransitions(signal) }],
    ['purge-recordings', { intervalMs: config.JOB_PURGE_RECORDINGS_INTERVAL_S * 1000, run: (signal) => purgeExpiredRecordings({ db, log, entitlements: fastify.entitlements }, signal) }]
  ])
  // Without a signing key (production with AUDIT_SIGNING_KEY unset) there is nothing to sign with.
  const signer = resolveAuditSigner(config.AUDIT_SIGNING_KEY, config.NODE_ENV)
  if (signer) jobs.set('audit-checkpoint', { intervalMs: config.JOB_AUDIT_CHECKPOINT_INTERVAL_S * 1000, run: (signal) => checkpointAuditChains({ db, signer, log }, signal) })
  fastify.decorate('jobs', jobs)
  const runner = createJobRunner({ db, log, instance, jobs, onOutcome: (job, outcome) => fastify.metrics.jobRuns.inc({ job, outcome }) })
  fastify.decorate('jobRunner', runner)

  await fastify.register(fastifySchedule)
  if (config.ENABLE_SCHEDULER) {
    fastify.addHook('onReady', async () => {
      for (const [name, job] of jobs) {
        const task = new AsyncTask(name, async () => { await runner.run(name, 'scheduler') }, () => {}) // failures are logged and recorded by the runner
        fastify.scheduler.addSimpleIntervalJob(new SimpleIntervalJob({ milliseconds: job.intervalMs }, task, { id: name, preventOverrun: true }))
      }
      log.info({ jobs: [...jobs.keys()], instance }, 'scheduler started')
    })
  }
  fastify.addHook('onClose', async () => {
    fastify.scheduler.stop() // no new ticks (toad-scheduler does not wait for running ones)
    await runner.drain(config.JOB_SHUTDOWN_DEADLINE_MS)
    log.info({ closed: 'scheduler' }, 'scheduler stopped')
  })
}, { name: 'scheduler', dependencies: ['config', 'db', 'audit', 'entitlements', 'metrics'], fastify: '5.x' })
