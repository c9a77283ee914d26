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
      operationId: 'listJobs',
      summary: 'List the scheduled jobs',
      querystring: Type.Object({ job: Type.Optional(Type.String({ maxLength: 64, pattern: NoNul })), limit: PageLimit(500, 100) }, strict),
      response: { 200: Type.Object({ runs: Type.Array(Run) }) }
    }
  }, async (request) => ({ runs: await fastify.services.jobRuns.list({ job: request.query.job ?? null, limit: request.query.limit }) }))
}

export default operatorJobs
