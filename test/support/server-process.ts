import { spawn } from 'node:child_process'
import { after } from 'node:test'
import { freePort } from './app.js'

/**
 * server.ts as its own process, the way `npm start` and a replica run it, on a free port with
 * exactly `env` (plus PATH and PORT): nothing leaks in from the test's environment. Its JSON
 * log lines are collected; it is SIGKILLed after the test if still running.
 */
export async function spawnServer (env: Record<string, string>) {
  const port = await freePort()
  const child = spawn(process.execPath, ['--import', 'tsx', 'server.ts'], {
    env: { PATH: process.env.PATH, PORT: String(port), ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  after(() => { child.kill('SIGKILL') })
  const lines: Array<Record<string, unknown>> = []
  let buffer = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => {
    buffer += d.toString()
    const parts = buffer.split('\n')
    buffer = parts.pop()!
    for (const p of parts) if (p.trim()) lines.push(JSON.parse(p) as Record<string, unknown>)
  })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  /** The exit code and when it came (Date.now()). */
  const exited = new Promise<{ code: number | null, at: number }>(resolve => child.on('exit', code => resolve({ code, at: Date.now() })))
  return { child, port, lines, stderr: () => stderr, exited }
}
