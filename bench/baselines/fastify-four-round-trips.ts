// Baseline: Fastify + pg, the tenant read as four round trips (BEGIN; set_config; SELECT 10
// rows under RLS as the runtime role; COMMIT). The tenant comes in the x-tenant-id header.
import Fastify from 'fastify'
import { closeOn, createPool, host, isUuid, port, readFourRoundTrips } from './common.js'
import { badRequest, membersResponse } from './schema.js'

const pool = createPool()
const app = Fastify({ logger: false })
app.get('/members', { schema: { response: { 200: membersResponse, 400: badRequest } } }, async (request, reply) => {
  const tenantId = request.headers['x-tenant-id']
  if (!isUuid(tenantId)) return reply.code(400).send({ error: 'x-tenant-id must be a UUID' })
  return { members: await readFourRoundTrips(pool, tenantId) }
})
await app.listen({ port, host })
closeOn(async () => { await app.close(); await pool.end() })
