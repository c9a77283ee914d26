import assert from 'node:assert/strict'
import net from 'node:net'
import { test } from 'node:test'
import { gracefulClose } from '../app.js'
import { buildTestApp, captureLogs, createTestDatabase, testConfig, waitFor } from './support/app.js'

const db = await createTestDatabase()

/** A raw keep-alive HTTP/1.1 connection, to see exactly what the server does with it. */
function connection (port: number) {
  const socket = net.connect(port, '127.0.0.1')
  let data = ''
  socket.on('data', (chunk: Buffer) => { data += chunk.toString() })
  return {
    send: (path: string) => socket.write(`GET ${path} HTTP/1.1\r\nHost: test\r\n\r\n`),
    text: () => data,
    closed: new Promise<void>(resolve => socket.on('close', () => resolve()))
  }
}

test('graceful close: readiness drains at once, in-flight requests finish, plugins close in reverse order (pool last)', async () => {
  const logs = captureLogs()
  const release: Array<() => void> = []
  const app = await buildTestApp(testConfig(db, { LOG_LEVEL: 'info' }), {
    logs,
    autoClose: false,
    setup (app) {
      app.get('/slow', { config: { auth: false } }, async () => {
        await new Promise<void>(resolve => release.push(resolve))
        // The pool is still open while a request is in flight.
        const { rows } = await app.db.query('SELECT 1 AS ok')
        return { done: rows[0].ok === 1 }
      })
    }
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as net.AddressInfo

  const conns = [connection(port), connection(port)]
  for (const c of conns) c.send('/slow')
  await waitFor(() => release.length === 2, { what: 'both slow requests in flight' })

  const started = Date.now()
  // A drain long enough that the two probes below land inside it on a busy machine.
  const closing = gracefulClose(app, 2000)
  // During the drain delay the instance still serves, but readiness already says draining.
  const probe = await fetch(`http://127.0.0.1:${port}/api/v1/health`)
  assert.equal(probe.status, 503)
  assert.equal((await probe.json()).status, 'draining')
  assert.equal((await fetch(`http://127.0.0.1:${port}/health`)).status, 200, 'liveness stays 200')

  // Release the slow requests only once the server has stopped listening.
  await waitFor(() => !app.server.listening, { what: 'close to begin' })
  for (const r of release) r()
  await Promise.all([...conns.map(c => c.closed), closing])
  assert.ok(Date.now() - started < 5000, 'close does not wait out keep-alive timeouts')

  for (const c of conns) {
    assert.match(c.text(), /^HTTP\/1\.1 200 /, 'the in-flight request completed')
    assert.match(c.text(), /connection: close/i, 'and its connection was closed after it')
    assert.match(c.text(), /\{"done":true\}$/)
  }
  const closed = logs.lines.filter(l => typeof l.closed === 'string').map(l => l.closed)
  assert.deepEqual(closed, ['scheduler', 'readiness', 'db'])
  assert.ok(app.db.pool.ended, 'the pool has ended')
})
