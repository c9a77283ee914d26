import type { Database } from './database.js'
import type { Logger } from './logger.js'

export type JobResult = Record<string, unknown>

export interface Job {
  /** The length of a tick: a run covers the slot floor(now / intervalMs). */
  intervalMs: number
  run(signal: AbortSignal): Promise<JobResult>
}

export interface RunOutcome {
  job: string
  /** false: another run (any replica, or an external cron) holds this tick. */
  ran: boolean
  durationMs: number
  result: JobResult | null
}

export class UnknownJobError extends Error {}

/**
 * Runs jobs at most once per tick across every replica: each run first inserts its
 * (job, slot) row; the unique key turns every other attempt into `ran: false`. Running jobs
 * are tracked so shutdown can wait for them (toad-scheduler's stop() does not), aborting
 * them at a deadline.
 */
export function createJobRunner ({ db, log, instance, jobs, now = Date.now, onOutcome = () => {} }: {
  db: Database
  log: Logger
  instance: string
  jobs: Map<string, Job>
  now?: () => number
  /** Told of every finished run (metrics). */
  onOutcome?: (job: string, outcome: 'succeeded' | 'failed' | 'aborted') => void
}) {
  const running = new Map<Promise<unknown>, AbortController>()
  let accepting = true

  async function execute (name: string, trigger: 'scheduler' | 'cron'): Promise<RunOutcome> {
    const job = jobs.get(name)
    if (!job) throw new UnknownJobError(`no job named ${name}`)
    const started = now()
    if (!accepting) return { job: name, ran: false, durationMs: 0, result: null }
    const slot = new Date(Math.floor(started / job.intervalMs) * job.intervalMs)
    // job_runs is the jobs' own (operator scope): no tenant context can take or rewrite a lease.
    const { rows: [lease] } = await db.withOperator(c => c.query<{ id: string }>(
      'INSERT INTO job_runs (job, slot, trigger, instance) VALUES ($1, $2, $3, $4) ON CONFLICT (job, slot) DO NOTHING RETURNING id',
      [name, slot, trigger, instance]))
    if (!lease) return { job: name, ran: false, durationMs: now() - started, result: null }

    const controller = new AbortController()
    const work = job.run(controller.signal)
    running.set(work, controller)
    try {
      const result = await work
      await db.withOperator(c => c.query(
        "UPDATE job_runs SET finished_at = clock_timestamp(), outcome = 'succeeded', result = $2 WHERE id = $1", [lease.id, result]))
      log.info({ job: name, trigger, result, ms: now() - started }, 'job succeeded')
      onOutcome(name, 'succeeded')
      return { job: name, ran: true, durationMs: now() - started, result }
    } catch (err) {
      const outcome = controller.signal.aborted ? 'aborted' : 'failed'
      log.error({ job: name, trigger, err }, `job ${outcome}`)
      onOutcome(name, outcome)
      await db.withOperator(c => c.query('UPDATE job_runs SET finished_at = clock_timestamp(), outcome = $2, error = $3 WHERE id = $1',
        [lease.id, outcome, (err as Error).message?.slice(0, 2000) ?? String(err)])).catch(() => {})
      throw err
    } finally {
      running.delete(work)
    }
  }

  return {
    names: () => [...jobs.keys()],
    has: (name: string) => jobs.has(name),
    get: (name: string) => jobs.get(name),
    run: execute,
    /** Stop taking runs; wait for those in flight, aborting them after `deadlineMs`. */
    async drain (deadlineMs: number) {
      accepting = false
      if (running.size === 0) return
      const all = Promise.allSettled([...running.keys()])
      const timer = setTimeout(() => {
        log.warn({ jobs: running.size }, 'shutdown deadline reached: aborting running jobs')
        for (const controller of running.values()) controller.abort(new Error('shutting down'))
      }, deadlineMs)
      await all
      clearTimeout(timer)
    },
    runningCount: () => running.size
  }
}

export type JobRunner = ReturnType<typeof createJobRunner>

/** Recent runs, newest first (GET /api/v1/operator/jobs). */
export async function listJobRuns (db: Database, { job, limit }: { job: string | null, limit: number }) {
  const { rows } = await db.withOperator(c => c.query(
    `SELECT id::text, job, slot, trigger, instance, started_at AS "startedAt", finished_at AS "finishedAt", outcome, error, result
       FROM job_runs WHERE ($1::text IS NULL OR job = $1) ORDER BY started_at DESC, id DESC LIMIT $2`,
    [job, limit]))
  return rows
}
