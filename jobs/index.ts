import type { Config } from '../config.js'
import type { Database } from '../infra/database.js'
import type { Job, JobResult } from '../infra/job-runner.js'
import type { Logger } from '../infra/logger.js'
import type { Services } from '../services/index.js'
import { auditCheckpointJob } from './audit-checkpoint.js'
import { lifecycleTransitionsJob } from './lifecycle-transitions.js'
import { purgeRecordingsJob } from './purge-recordings.js'
import { purgeSessionsJob } from './purge-sessions.js'

/** What a job runs with. */
export interface JobContext { config: Config, db: Database, log: Logger, services: Services }

/** The settings that hold a job's interval, in seconds. */
export type IntervalSetting = { [K in keyof Config]-?: K extends `JOB_${string}_INTERVAL_S` ? K : never }[keyof Config]

/** One scheduled job (docs/jobs.md, "Adding a job"). */
export interface JobDefinition {
  /** Its name in job_runs, metrics, logs and the cron mount's path. */
  name: string
  interval: IntervalSetting
  /** Whether this process can run it; by default it always can. */
  enabled?: (ctx: JobContext) => boolean
  run(ctx: JobContext, signal: AbortSignal): Promise<JobResult>
}

/** Every job. The scheduler and the internal cron mount both run these, through one job runner. */
export const JOBS: readonly JobDefinition[] = [purgeSessionsJob, lifecycleTransitionsJob, purgeRecordingsJob, auditCheckpointJob]

/** The jobs this process runs, by name, in the job runner's shape. */
export function jobsFor (ctx: JobContext, jobs: readonly JobDefinition[] = JOBS): Map<string, Job> {
  return new Map(jobs.filter(job => job.enabled?.(ctx) ?? true).map(job => [job.name, {
    intervalMs: ctx.config[job.interval] * 1000,
    run: (signal: AbortSignal) => job.run(ctx, signal)
  }]))
}
