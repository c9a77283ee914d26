import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Marks the probes, which keep answering while the instance drains. */
    probe?: boolean
  }
}

const Check = Type.Object({ name: Type.String(), ok: Type.Boolean(), detail: Type.String() })
const Readiness = Type.Object({
  status: Type.Union([Type.Literal('ready'), Type.Literal('unavailable'), Type.Literal('draining')]),
  checks: Type.Array(Check)
})

/** Probes: liveness never depends on anything; readiness reports readiness. */
const health: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/health', {
    schema: {
      tags: ['probes'],
      operationId: 'getLiveness',
      summary: 'Liveness probe',
      response: { 200: Type.Object({ status: Type.Literal('ok') }) }
    },
    config: { probe: true, auth: false, rateLimit: false },
    logLevel: 'warn'
  }, async () => ({ status: 'ok' as const }))

  fastify.get('/api/v1/health', {
    schema: {
      tags: ['probes'],
      operationId: 'getReadiness',
      summary: 'Readiness probe',
      response: { 200: Readiness, 503: Readiness }
    },
    config: { probe: true, auth: false, rateLimit: false },
    logLevel: 'warn'
  }, async (_request, reply) => {
    const report = fastify.readiness.report()
    return reply.code(report.status === 'ready' ? 200 : 503).send(report)
  })
}

export default health
