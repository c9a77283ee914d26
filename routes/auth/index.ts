import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type, type Static } from '@sinclair/typebox'
import { DateTime, NoContent, PageLimit, Role, strict, Uuid } from '../schemas.js'
import type { FastifyRequest } from 'fastify'
import { PASSWORD_MAX, PASSWORD_MIN } from '../../infra/passwords.js'

const Email = Type.String({ format: 'email', maxLength: 254 })
const Password = Type.String({ minLength: PASSWORD_MIN, maxLength: PASSWORD_MAX })
// Stored trimmed, so it needs a visible character; control characters (NUL above all, which
// Postgres refuses in text) have no place in a display name. Linear: no backtracking blow-up.
const TenantName = Type.String({ minLength: 1, maxLength: 200, pattern: '^(?=[^\\u0000-\\u001f\\u007f]*$)\\s*\\S' })

export const SessionEnvelope = Type.Object({
  accessToken: Type.String(),
  refreshToken: Type.String(),
  expiresIn: Type.Integer({ description: 'seconds until the access token expires' }),
  user: Type.Object({ id: Uuid, email: Type.String() }),
  tenant: Type.Union([Type.Object({ id: Uuid, name: Type.String(), slug: Type.String(), role: Role }), Type.Null()]),
  session: Type.Object({ id: Uuid })
}, { $id: 'SessionEnvelope' })
/** The envelope by reference: one named schema (addSchema below) for the serializer and the document. */
const sessionResponse = (description: string) =>
  Type.Unsafe<Static<typeof SessionEnvelope>>(Type.Ref(`${SessionEnvelope.$id}#`, { description }))

const SessionList = Type.Object({
  sessions: Type.Array(Type.Object({
    id: Uuid,
    tenantId: Type.Union([Uuid, Type.Null()]),
    createdAt: DateTime,
    lastUsedAt: DateTime,
    ip: Type.Union([Type.String(), Type.Null()]),
    userAgent: Type.Union([Type.String(), Type.Null()]),
    current: Type.Boolean()
  })),
  nextCursor: Type.Union([Type.String(), Type.Null()], { description: 'pass as ?cursor= for the next page; null on the last page' })
})

const meta = (request: FastifyRequest) => ({ ip: request.ip, userAgent: request.headers['user-agent'] ?? null })

/** Sign-up, login, refresh, logout, sessions and password (docs/auth.md). */
const auth: FastifyPluginAsyncTypebox = async (fastify) => {
  const { accounts, config } = fastify
  fastify.addSchema(SessionEnvelope)
  // Stricter per-IP limits on the credential routes (with a strict per-process fallback when
  // Redis is down). Login and the current password are also limited per (account, client) and
  // per account, in Postgres (services/login-throttle.ts).
  const perIp = {
    max: config.AUTH_RATE_LIMIT_MAX, timeWindow: config.AUTH_RATE_LIMIT_WINDOW_MS, strictFallbackMax: config.AUTH_RATE_LIMIT_FALLBACK_MAX
  }

  fastify.post('/api/v1/auth/signup', {
    config: { auth: false, rateLimit: perIp },
    schema: {
      tags: ['auth'],
      operationId: 'signup',
      summary: 'Create an account and its tenant',
      body: Type.Object({ email: Email, password: Password, tenantName: TenantName }, strict),
      response: { 201: sessionResponse('The new account\'s session, in its new tenant') }
    }
  }, async (request, reply) => reply.code(201).send(await accounts.signup(request.body, meta(request))))

  fastify.post('/api/v1/auth/login', {
    config: { auth: false, rateLimit: perIp },
    schema: {
      tags: ['auth'],
      operationId: 'login',
      summary: 'Log in',
      body: Type.Object({
        email: Email,
        // Any length is checked against the stored hash; only the upper bound protects the server.
        password: Type.String({ minLength: 1, maxLength: PASSWORD_MAX }),
        tenant: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'tenant id or slug' }))
      }, strict),
      response: { 200: sessionResponse('A new session') }
    }
  }, async (request) => accounts.login(request.body, meta(request)))

  fastify.post('/api/v1/auth/refresh', {
    config: { auth: false, rateLimit: perIp },
    schema: {
      tags: ['auth'],
      operationId: 'refreshSession',
      summary: 'Exchange a refresh token for new tokens',
      body: Type.Object({ refreshToken: Type.String({ minLength: 1, maxLength: 200 }) }, strict),
      response: { 200: sessionResponse('The session with new tokens (the refresh token rotates)') }
    }
  }, async (request) => accounts.refresh(request.body.refreshToken, meta(request)))

  fastify.post('/api/v1/auth/logout', {
    config: { auth: 'session' },
    schema: {
      tags: ['auth'],
      operationId: 'logout',
      summary: 'End the current session',
      response: { 204: NoContent }
    }
  }, async (request, reply) => {
    await accounts.logout(request.auth!)
    return reply.code(204).send(null)
  })

  fastify.get('/api/v1/auth/sessions', {
    config: { auth: 'session' },
    schema: {
      tags: ['auth'],
      operationId: 'listSessions',
      summary: 'List the caller\'s sessions',
      description: 'The caller\'s live sessions, newest first, a page at a time.',
      querystring: Type.Object({
        limit: PageLimit(100, 50),
        cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 128, description: 'nextCursor of the previous page' }))
      }, strict),
      response: { 200: SessionList }
    }
  }, async (request) => accounts.listSessions(request.auth!, request.query))

  fastify.delete('/api/v1/auth/sessions/:id', {
    config: { auth: 'session' },
    schema: {
      tags: ['auth'],
      operationId: 'revokeSession',
      summary: 'Revoke one of the caller\'s sessions',
      params: Type.Object({ id: Type.String({ maxLength: 64 }) }),
      response: { 204: NoContent }
    }
  }, async (request, reply) => {
    await accounts.revokeSession(request.auth!, request.params.id)
    return reply.code(204).send(null)
  })

  fastify.post('/api/v1/auth/password', {
    config: { auth: 'session', rateLimit: perIp },
    schema: {
      tags: ['auth'],
      operationId: 'changePassword',
      summary: 'Change the caller\'s password',
      body: Type.Object({ currentPassword: Type.String({ minLength: 1, maxLength: PASSWORD_MAX }), newPassword: Password }, strict),
      response: { 204: NoContent }
    }
  }, async (request, reply) => {
    await accounts.changePassword(request.auth!, request.body.currentPassword, request.body.newPassword, meta(request))
    return reply.code(204).send(null)
  })
}

export default auth
