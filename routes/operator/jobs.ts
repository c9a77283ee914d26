import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { DateTime, NoNul, PageLimit, strict } from '../schemas.js'

const Run = Type.Object({
  id: Type.String(),
  job: Type.String(),
  slot: DateTime,
  trigger: Type.String(),
  instance: Type.String(),
  startedAt: DateTime,
  finishedAt: Type.Union([DateTime, Type.Null()]),
  outcome: Type.String(),
  error: Type.Union([Type.String(), Type.Null()]),
  result: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()])
})

/** GET /api/v1/operator/jobs: recent scheduled-job runs, newest first. */
const operatorJobs: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/api/v1/operator/jobs', {
    config: { auth: 'operator' },
    schema: {
      tags: ['operator'],
      querystring: Type.Object({ job: Type.Optional(Type.String({ maxLength: 64, pattern: NoNul })), limit: PageLimit(500, 100) }, strict),
      response: { 200: Type.Object({ runs: Type.Array(Run) }) }
    }
  }, async (request) => {
    const { rows } = await fastify.db.withOperator(c => c.query(
      `SELECT id::text, job, slot, trigger, instance, started_at AS "startedAt", finished_at AS "finishedAt", outcome, error, result
         FROM job_runs WHERE ($1::text IS NULL OR job = $1) ORDER BY started_at DESC, id DESC LIMIT $2`,
      [request.query.job ?? null, request.query.limit]))
    return { runs: rows }
  })
}

export default operatorJobs
