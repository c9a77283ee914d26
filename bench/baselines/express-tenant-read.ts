// Baseline: the same authenticated tenant read on the Express 5 + pg stack: the bearer lookup
// exactly as services/sessions.ts does it (one call of auth_resolve_access), then the read as
// four round trips.
import express from 'express'
import { hashToken, tokenUserId } from '../../services/tokens.js'
import { closeOn, createPool, host, port, readFourRoundTrips } from './common.js'

const pool = createPool()
// REFRESH_IDLE_TIMEOUT_S's default, as the service passes it.
const idle = `${Number(process.env.REFRESH_IDLE_TIMEOUT_S ?? 7 * 24 * 3600)} seconds`
const BEARER = /^Bearer ([^\s]+)$/i

const app = express()
app.disable('x-powered-by')
app.get('/api/v1/tenant/members', async (req, res) => {
  const match = BEARER.exec(req.headers.authorization ?? '')
  const token = match?.[1]
  const userId = token ? tokenUserId(token) : null
  if (!token || !userId) { res.status(401).json({ error: 'unauthenticated' }); return }
  const { rows: [session] } = await pool.query<{ tenant_id: string | null, role: string | null }>(
    'SELECT * FROM auth_resolve_access($1, $2, $3::interval)', [userId, hashToken(token), idle])
  if (!session) { res.status(401).json({ error: 'invalid token' }); return }
  if (!session.tenant_id) { res.status(403).json({ error: 'needs a tenant session' }); return }
  res.json({ members: await readFourRoundTrips(pool, session.tenant_id) })
})
// Express 5 passes a rejected promise to the error handler.
app.use((err: Error, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
  res.status(500).json({ error: err.message })
})
const server = app.listen(port, host)
closeOn(async () => {
  const closed = new Promise(resolve => server.close(resolve))
  server.closeAllConnections()
  await closed
  await pool.end()
})
