import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { DateTime, NoContent, Role, strict, Uuid } from '../schemas.js'
import { TENANT_READS } from '../../services/tenants.js'

const Member = Type.Object({ userId: Uuid, email: Type.String(), role: Role })

/** The caller's tenant and its members (docs/auth.md). */
const tenant: FastifyPluginAsyncTypebox = async (fastify) => {
  const { tenants } = fastify.services

  fastify.get('/api/v1/tenant', {
    config: { tenantRead: TENANT_READS.tenant },
    schema: {
      tags: ['tenant'],
      operationId: 'getTenant',
      summary: 'Get the current tenant',
      response: {
        200: Type.Object({
          id: Uuid, name: Type.String(), slug: Type.String(), plan: Type.String(), lifecycle: Type.String(), createdAt: DateTime
        })
      }
    }
  }, async (request) => tenants.get(request.tenant!.id, request.withTenant, request.tenantRead))

  fastify.get('/api/v1/tenant/members', {
    config: { tenantRead: TENANT_READS.members },
    schema: {
      tags: ['tenant'],
      operationId: 'getTenantMembers',
      summary: 'List the tenant\'s members',
      response: { 200: Type.Object({ members: Type.Array(Member) }) }
    }
  }, async (request) => ({ members: await tenants.members(request.tenant!.id, request.withTenant, request.tenantRead) }))

  fastify.post('/api/v1/tenant/members', {
    config: { roles: ['owner', 'admin'] },
    schema: {
      tags: ['tenant'],
      operationId: 'addTenantMember',
      summary: 'Add a member to the tenant',
      body: Type.Object({ email: Type.String({ format: 'email', maxLength: 254 }), role: Role }, strict),
      response: { 201: Member }
    }
  }, async (request, reply) => reply.code(201).send(await tenants.addMember(request.auth!, request.body.email, request.body.role)))

  fastify.patch('/api/v1/tenant/members/:userId', {
    config: { roles: ['owner', 'admin'] },
    schema: {
      tags: ['tenant'],
      operationId: 'updateTenantMember',
      summary: 'Change a member\'s role',
      params: Type.Object({ userId: Type.String({ maxLength: 64 }) }),
      body: Type.Object({ role: Role }, strict),
      response: { 200: Member }
    }
  }, async (request) => tenants.changeRole(request.auth!, request.params.userId, request.body.role))

  fastify.delete('/api/v1/tenant/members/:userId', {
    schema: {
      tags: ['tenant'],
      operationId: 'removeTenantMember',
      summary: 'Remove a member from the tenant',
      params: Type.Object({ userId: Type.String({ maxLength: 64 }) }),
      response: { 204: NoContent }
    }
  }, async (request, reply) => {
    await tenants.removeMember(request.auth!, request.params.userId)
    return reply.code(204).send(null)
  })
}

export default tenant
