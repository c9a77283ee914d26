import fp from 'fastify-plugin'
import type { AuditSink } from '../services/audit-sink.js'
import { appendAudit } from '../services/audit.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Appends to an audit chain inside the caller's transaction. */
    audit: AuditSink
  }
}

/** The audit chain writer every service that changes something is given. */
export default fp(async (fastify) => {
  const sink: AuditSink = appendAudit
  const latency = fastify.metrics.auditAppend
  fastify.decorate('audit', async (client, chain, tenantId, entry) => {
    const end = latency.startTimer()
    try {
      return await sink(client, chain, tenantId, entry)
    } finally {
      end()
    }
  })
}, { name: 'audit', dependencies: ['db', 'metrics'], fastify: '5.x' })
