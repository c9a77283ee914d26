import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import net from 'node:net'
import { after, type TestContext } from 'node:test'
import { freePort } from './app.js'

export interface TestRedis {
  url: string
  stop(): Promise<void>
  start(): Promise<void>
}

const available = () => spawnSync('redis-server', ['--version']).status === 0

function ping (port: number) {
  return new Promise<boolean>(resolve => {
    const s = net.connect(port, '127.0.0.1')
    s.on('connect', () => s.write('PING\r\n'))
    s.on('data', d => { s.destroy(); resolve(d.toString().startsWith('+PONG')) })
    s.on('error', () => resolve(false))
  })
}

/**
 * A redis-server of the test's own, on a free port, that the test can stop and start again.
 * Without the binary the test is skipped, except in CI (CI=true), where it fails instead.
 */
export async function startTestRedis (t: TestContext | null): Promise<TestRedis | null> {
  if (!available()) {
    if (process.env.CI) throw new Error('redis-server is not installed, and CI must run the Redis tests')
    t?.skip('redis-server is not installed: Redis tests skipped (apt-get install redis-server)')
    return null
  }
  const port = await freePort()
  let child: ChildProcess | undefined
  const redis: TestRedis = {
    url: `redis://127.0.0.1:${port}`,
    async start () {
      const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']
      child = spawn('redis-server', args, { stdio: 'ignore' })
      const deadline = Date.now() + 5000
      while (!await ping(port)) {
        if (Date.now() > deadline) throw new Error('redis-server did not start')
        await new Promise(resolve => setTimeout(resolve, 20))
      }
    },
    async stop () {
      const c = child
      child = undefined
      if (!c || c.exitCode !== null) return
      const exited = new Promise(resolve => c.once('exit', resolve))
      c.kill('SIGKILL')
      await exited
    }
  }
  await redis.start()
  after(() => redis.stop())
  return redis
}
