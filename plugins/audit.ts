import fp from 'fastify-plugin'
import { noAudit, type AuditSink } from '../services/audit-sink.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Appends to an audit chain inside the caller's transaction. */
    audit: AuditSink
  }
}

/** The audit chain writer every service that changes something is given. */
export default fp(async (fastify) => {
  fastify.decorate('audit', noAudit)
}, { name: 'audit', dependencies: ['db'], fastify: '5.x' })
