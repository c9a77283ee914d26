import type { FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import type pg from 'pg'
import { databaseUrls } from '../config.js'
import { AppError } from '../errors.js'
import type { HeldTransaction } from '../infra/database.js'
import type { AuthContext, Role } from '../services/sessions.js'
import { countHeldTransaction } from '../infra/tenant-slots.js'
import { bearerToken } from '../infra/http.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** The caller, resolved from the bearer token; null on public routes. */
    auth: AuthContext | null
    /**
     * On a tenant GET: the transaction the auth lookup opened, already in the caller's tenant.
     * The first request.withTenant() runs in it; otherwise it is committed once the response is sent.
     */
    heldTransaction: HeldTransaction | null
    /** On a tenant GET whose route declares a tenantRead: that statement's result, read with the auth lookup. */
    tenantRead: pg.QueryResult | null
  }
  interface FastifyContextConfig {
    /**
     * Who may call the route: 'tenant' (the default: a session acting in a tenant),
     * 'operator', 'session' (any valid session) or false (public).
     */
    auth?: 'tenant' | 'operator' | 'session' | false
    /** Tenant roles allowed on a 'tenant' route (default: every member). */
    roles?: Role[]
    /**
     * A tenant GET's whole read, if it is one constant statement in the session's tenant
     * (sessions.resolveAndRead): it travels with the auth lookup, BEGIN and COMMIT as one
     * round trip, and the handler finds its result in request.tenantRead.
     */
    tenantRead?: string
  }
}

/**
 * Authentication, secure by default: every route needs a tenant session unless its config
 * says otherwise. Runs at preParsing, after the per-IP rate limit (onRequest) and before any
 * body is parsed for a caller we do not know.
 */
export default fp(async (fastify) => {
  const { config, log } = fastify
  const { sessions, accounts } = fastify.services
  fastify.decorateRequest('auth', null)
  fastify.decorateRequest('heldTransaction', null)
  fastify.decorateRequest('tenantRead', null)
  // A tenantRead is SQL sent as it is, before the token is known good: hold it to its rules
  // when the route is declared, not when a request finds out.
  fastify.addHook('onRoute', (route) => {
    const read = route.config?.tenantRead
    if (read !== undefined && (!/app_tenant_id\(\)|\btenant_read_\w+\(\)/.test(read) || /[;$]/.test(read))) {
      throw new Error(`${route.method} ${route.url}: a tenantRead is one constant statement taking its tenant from the context ` +
        "(app_tenant_id() or a tenant_read_…() function), with no ';' and no parameters")
    }
  })

  // Ends a held transaction nothing ran in (refused, answered from cache, or aborted).
  const endHeld = async (request: FastifyRequest) => {
    const held = request.heldTransaction
    if (held) await held.end().catch((err: unknown) => request.log.warn({ err }, 'ending the request transaction failed'))
  }
  fastify.addHook('preParsing', async (request, reply) => {
    const mode = request.routeOptions.config.auth ?? 'tenant'
    if (mode === false || request.is404) return
    const token = bearerToken(request.headers.authorization)
    if (!token) throw new AppError('AUTH_UNAUTHENTICATED', 'send Authorization: Bearer <accessToken>')
    // A tenant GET reads under the tenant right after this lookup. If its route declares its
    // one statement (tenantRead), BEGIN, the lookup, that read and COMMIT go as one round trip;
    // it runs before the per-tenant limit and role checks, which then decide whether its rows
    // are answered (a refused token is remembered, so a flood does not repeat it). Otherwise
    // BEGIN, the lookup and the tenant context go as one round trip, and the handler's reads
    // join that transaction. Only GET: no connection is held while a client sends a body, and
    // GET handlers reach the database through request.withTenant alone
    // (test/request-transaction.test.ts runs each of them on a pool of one connection, where a
    // second checkout would never come).
    let auth: AuthContext | null
    const tenantGet = mode === 'tenant' && request.method === 'GET'
    const tenantRead = request.routeOptions.config.tenantRead
    if (tenantGet && tenantRead) {
      // The route's whole read goes with the lookup, as one round trip: nothing is held.
      const found = await sessions.resolveAndRead(token, tenantRead)
      auth = found?.auth ?? null
      request.tenantRead = found?.read ?? null
    } else if (tenantGet) {
      const held = await sessions.resolveHeld(token)
      auth = held?.auth ?? null
      // Now that the tenant is known, its connection counts as one of the tenant's share of the
      // pool; over the share it is ended at once (null) and the request's reads queue for one.
      const transaction = held?.auth.tenantId
        ? await countHeldTransaction(fastify.tenantSlots, held.auth.tenantId, held.transaction)
        : held?.transaction
      if (transaction) {
        request.heldTransaction = transaction
        // The response's 'close' comes whatever happens, including a client that went away
        // (Fastify runs no onResponse hook for a reply it never sends); if it came already,
        // while the lookup ran, end the transaction now.
        if (request.raw.socket?.destroyed) {
          await transaction.end()
          request.heldTransaction = null
          throw new AppError('BAD_REQUEST', 'the client went away')
        }
        reply.raw.once('close', () => { endHeld(request).catch(() => {}) })
      }
    } else {
      auth = await sessions.resolve(token)
    }
    if (!auth) throw new AppError('AUTH_INVALID_TOKEN', 'the access token is invalid, expired or revoked')
    if (mode === 'operator' && !auth.isOperator) throw new AppError('AUTH_FORBIDDEN', 'operator sessions only')
    if (mode === 'tenant') {
      if (!auth.tenantId) throw new AppError('TENANT_FORBIDDEN', 'this route needs a session in a tenant')
      const roles = request.routeOptions.config.roles
      if (roles && !roles.includes(auth.role!)) throw new AppError('TENANT_FORBIDDEN', `needs role ${roles.join(' or ')}`)
    }
    request.auth = auth
  })
  fastify.addHook('onResponse', endHeld)
  fastify.addHook('onRequestAbort', endHeld)

  // The first operator, created once if absent, after the first readiness round (which
  // applies migrations). A database that is down at boot only delays it to the next boot.
  // Through the owner connection: the runtime role cannot set is_operator.
  const { OPERATOR_BOOTSTRAP_EMAIL: email, OPERATOR_BOOTSTRAP_PASSWORD: password } = config
  if (email && password) {
    fastify.addHook('onReady', async () => {
      fastify.readiness.refresh()
        .then(() => accounts.ensureOperator(databaseUrls(config).migration, email, password))
        .then(outcome => log.info({ operator: email, outcome }, 'operator bootstrap'))
        .catch((err: unknown) => log.warn({ err }, 'operator bootstrap failed; it runs again at the next boot'))
    })
  }
}, { name: 'auth', dependencies: ['config', 'db', 'readiness', 'services'], fastify: '5.x' })
