// Baseline: Fastify + pg, the same tenant read as one round trip (a multi-statement simple
// query with the validated UUID as a literal): the practical limit of this work.
import Fastify from 'fastify'
import { closeOn, createPool, host, isUuid, port, readOneRoundTrip } from './common.js'
import { badRequest, membersResponse } from './schema.js'

const pool = createPool()
const app = Fastify({ logger: false })
app.get('/members', { schema: { response: { 200: membersResponse, 400: badRequest } } }, async (request, reply) => {
  const tenantId = request.headers['x-tenant-id']
  if (!isUuid(tenantId)) return reply.code(400).send({ error: 'x-tenant-id must be a UUID' })
  return { members: await readOneRoundTrip(pool, tenantId) }
})
await app.listen({ port, host })
closeOn(async () => { await app.close(); await pool.end() })
