import { randomUUID } from 'node:crypto'
import type { Writable } from 'node:stream'
import Fastify, { LogController, type FastifyReply, type FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { Config } from './config.js'
import { problem } from './errors.js'
import { refuseNonFiniteNumbers } from './routes/schemas.js'
import { checkedClientAddress, trustProxyOption } from './infra/client-address.js'
import { createLogger } from './infra/logger.js'
import configPlugin from './plugins/config.js'
import errorHandler from './plugins/error-handler.js'
import securityHeaders from './plugins/security-headers.js'
import cors from './plugins/cors.js'
import db from './plugins/db.js'
import readiness from './plugins/readiness.js'
import metrics from './plugins/metrics.js'
import openapi from './plugins/openapi.js'
import audit from './plugins/audit.js'
import services from './plugins/services.js'
import auth from './plugins/auth.js'
import tenantContext from './plugins/tenant-context.js'
import entitlements from './plugins/entitlements.js'
import entitlementBroadcast from './plugins/entitlement-broadcast.js'
import rateLimit from './plugins/rate-limit.js'
import notFound from './plugins/not-found.js'
import scheduler from './plugins/scheduler.js'
import healthRoutes from './routes/health/index.js'
import authRoutes from './routes/auth/index.js'
import tenantRoutes from './routes/tenant/index.js'
import entitlementRoutes from './routes/entitlements/index.js'
import operatorTenantRoutes from './routes/operator/tenants.js'
import operatorJobRoutes from './routes/operator/jobs.js'
import internalCronRoutes from './routes/internal-cron/index.js'
import auditRoutes from './routes/audit/index.js'
import operatorAuditRoutes from './routes/operator/audit.js'
import recordingRoutes from './routes/recordings/index.js'
import recorderRoutes from './routes/recorder/index.js'

export interface BuildOptions {
  /** The process logger (server.ts shares it with the boot steps before the app exists). */
  logger?: Logger
  /** Where log lines go when no logger is given (tests capture them); defaults to stdout. */
  logStream?: Writable
}

// A client's X-Request-Id is kept when it is a sane token, so traces join across services.
const REQUEST_ID = /^[\w.:-]{1,64}$/

// One line per request, when it completes (Fastify's default writes two).
class OneLinePerRequest extends LogController {
  override incomingRequest () {}
  override requestCompleted (error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply) {
    const line = { method: request.method, url: request.url, statusCode: reply.statusCode, ms: Math.round(reply.elapsedTime) }
    if (error) reply.log.error({ ...line, err: error }, 'request errored')
    else reply.log.info(line, 'request completed')
  }
}

/**
 * The whole service as one Fastify instance, plugins registered in dependency order (their
 * onClose hooks run in reverse, so the pool ends last). It never listens: server.ts does.
 */
export async function buildApp (config: Config, opts: BuildOptions = {}) {
  const app = Fastify({
    loggerInstance: opts.logger ?? createLogger(config, opts.logStream),
    logController: new OneLinePerRequest(),
    genReqId: (req) => {
      const given = req.headers['x-request-id']
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID()
    },
    bodyLimit: config.BODY_LIMIT,
    trustProxy: trustProxyOption(config.TRUST_PROXY),
    return503OnClosing: false,
    // Errors raised before routing (a malformed URL) get the same problem+json shape.
    frameworkErrors: (error, request, reply) => {
      // Typed for a generic route; this reply belongs to none, so widen it. No onRequest hook
      // runs before a framework error, so the request id header is set here.
      (reply as FastifyReply).code(400).header('x-request-id', request.id).type('application/problem+json')
        .send(problem('BAD_REQUEST', error.message, request.id))
    },
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', useDefaults: true } }
  }).withTypeProvider<TypeBoxTypeProvider>()

  app.addHook('onRequest', async (request, reply) => { reply.header('x-request-id', request.id) })
  if (config.TRUST_PROXY !== false) {
    // request.ip is derived from X-Forwarded-For on every read; derive it once, and never let
    // a hop that is no address (a client wrote it) become the client's rate-limit key or audit IP.
    app.addHook('onRequest', (request, _reply, done) => {
      Object.defineProperty(request, 'ip', { value: checkedClientAddress(request.ip, request.socket.remoteAddress), enumerable: true })
      done()
    })
  }
  app.addHook('onRoute', refuseNonFiniteNumbers)

  await app.register(configPlugin, { config })
  await app.register(errorHandler)
  // helmet's headers for a JSON API; /docs sets its own CSP (plugins/openapi.ts).
  await app.register(securityHeaders)
  // Before every limit and authentication: a preflight is answered at once.
  await app.register(cors)
  // No cache keeps an API answer (a token above all: RFC 6749 §5.1) unless its route says so.
  app.addHook('onRequest', (request, reply, done) => {
    if (request.url.startsWith('/api/')) reply.header('cache-control', 'no-store')
    done()
  })
  await app.register(db)
  await app.register(readiness)
  await app.register(metrics)
  await app.register(audit)
  await app.register(services)
  await app.register(auth)
  await app.register(tenantContext)
  await app.register(entitlements)
  await app.register(entitlementBroadcast)
  await app.register(rateLimit)
  await app.register(notFound)
  await app.register(scheduler)
  await app.register(openapi)

  await app.register(healthRoutes)
  await app.register(authRoutes)
  await app.register(tenantRoutes)
  await app.register(entitlementRoutes)
  await app.register(operatorTenantRoutes)
  await app.register(operatorJobRoutes)
  await app.register(internalCronRoutes)
  await app.register(auditRoutes)
  await app.register(operatorAuditRoutes)
  await app.register(recordingRoutes)
  await app.register(recorderRoutes)
  return app
}

export type App = Awaited<ReturnType<typeof buildApp>>

/**
 * What SIGTERM does: readiness answers "draining" at once so the balancer stops sending new
 * work, an optional delay covers endpoint propagation, then close lets the requests in
 * flight finish and runs the plugins' onClose hooks in reverse (the pool ends last).
 */
export async function gracefulClose (app: App, drainDelayMs = 0) {
  app.readiness.drain()
  if (drainDelayMs > 0) await new Promise(resolve => setTimeout(resolve, drainDelayMs))
  await app.close()
}
