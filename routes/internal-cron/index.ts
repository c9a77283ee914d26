import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { AppError } from '../../errors.js'
import { bearerCredentials } from '../../infra/http.js'
import { secretMatcher } from '../../infra/secrets.js'

/**
 * POST /api/internal/cron/:job for an external scheduler (GitHub Actions, EventBridge, a
 * Kubernetes CronJob). The whole mount exists only with ENABLE_INTERNAL_CRON=1 and a
 * CRON_SECRET; otherwise every path under it is a plain 404.
 */
const internalCron: FastifyPluginAsyncTypebox = async (fastify) => {
  const { config, jobRunner, cronSecretLimit } = fastify
  if (!config.ENABLE_INTERNAL_CRON || !config.CRON_SECRET) return
  const matches = secretMatcher(config.CRON_SECRET)

  fastify.post('/api/internal/cron/:job', {
    config: { auth: false },
    schema: {
      tags: ['internal'],
      operationId: 'runCronJob',
      summary: 'Run a scheduled job (external scheduler)',
      // Not a session: the scheduler sends Authorization: Bearer <CRON_SECRET>.
      security: [{ cronSecret: [] }],
      params: Type.Object({ job: Type.String({ maxLength: 64 }) }),
      response: {
        200: Type.Object({
          job: Type.String(),
          ran: Type.Boolean({ description: 'false when another run holds this tick' }),
          durationMs: Type.Number(),
          result: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()])
        })
      }
    }
  }, async (request, reply) => {
    // Wrong secrets have a strict budget per client IP (CRON_AUTH_FAILURES_PER_MINUTE), checked
    // before the comparison: once it is spent, even the right secret answers 429 until the
    // window ends, so a guesser learns nothing from its next tries.
    await cronSecretLimit.check(request, reply)
    const secret = bearerCredentials(request.headers.authorization)
    if (!secret) throw new AppError('AUTH_UNAUTHENTICATED', 'send Authorization: Bearer <CRON_SECRET>')
    if (!matches(secret)) {
      await cronSecretLimit.failed(request, reply)
      throw new AppError('AUTH_INVALID_TOKEN', 'the cron secret is not valid')
    }
    if (!jobRunner.has(request.params.job)) {
      throw new AppError('NOT_FOUND', `no job named ${request.params.job}; jobs: ${jobRunner.names().join(', ')}`)
    }
    return jobRunner.run(request.params.job, 'cron')
  })
}

export default internalCron
