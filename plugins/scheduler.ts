import { hostname } from 'node:os'
import fp from 'fastify-plugin'
import fastifySchedule from '@fastify/schedule'
import { AsyncTask, SimpleIntervalJob } from 'toad-scheduler'
import { createJobRunner, type Job, type JobRunner } from '../infra/job-runner.js'
import { jobsFor } from '../jobs/index.js'

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
  const jobs = jobsFor({ config, db, log, services: fastify.services })
  fastify.decorate('jobs', jobs)
  const runner = createJobRunner({ db, log, instance, jobs, onOutcome: (job, outcome) => fastify.metrics.jobRuns.inc({ job, outcome }) })
  fastify.decorate('jobRunner', runner)

  await fastify.register(fastifySchedule)
  if (config.ENABLE_SCHEDULER) {
    fastify.addHook('onReady', async () => {
      for (const [name, job] of jobs) {
        // Failures are logged and recorded by the runner.
        const task = new AsyncTask(name, async () => { await runner.run(name, 'scheduler') }, () => {})
        fastify.scheduler.addSimpleIntervalJob(
          new SimpleIntervalJob({ milliseconds: job.intervalMs }, task, { id: name, preventOverrun: true }))
      }
      log.info({ jobs: [...jobs.keys()], instance }, 'scheduler started')
    })
  }
  fastify.addHook('onClose', async () => {
    fastify.scheduler.stop() // no new ticks (toad-scheduler does not wait for running ones)
    await runner.drain(config.JOB_SHUTDOWN_DEADLINE_MS)
    log.info({ closed: 'scheduler' }, 'scheduler stopped')
  })
}, { name: 'scheduler', dependencies: ['config', 'db', 'services', 'metrics'], fastify: '5.x' })
