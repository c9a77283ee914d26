import type { Writable } from 'node:stream'
import pino, { type BaseLogger, type Logger as PinoLogger } from 'pino'
import type { Config } from '../config.js'

/** What services need of a logger: Fastify's and a bare pino both fit. */
export type Logger = Pick<BaseLogger, 'debug' | 'info' | 'warn' | 'error'>

// Secrets never reach the logs, whatever a future log call passes in.
const SECRET_KEYS = [
  'password', 'currentPassword', 'newPassword', 'refreshToken', 'accessToken', 'token', 'secret', 'CRON_SECRET', 'AUDIT_SIGNING_KEY'
]
export const REDACT = [
  'req.headers.authorization', 'req.headers.cookie', 'res.headers["set-cookie"]',
  ...SECRET_KEYS, ...SECRET_KEYS.map(k => `*.${k}`)
]

/** JSON lines in production; pretty output only for a developer's terminal. */
export function createLogger (config: Config, stream?: Writable): PinoLogger {
  const options = { level: config.LOG_LEVEL, redact: { paths: REDACT, censor: '[redacted]' } }
  if (stream) return pino(options, stream)
  if (config.NODE_ENV === 'development' && process.stdout.isTTY) {
    return pino({ ...options, transport: { target: 'pino-pretty', options: { translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname' } } })
  }
  return pino(options)
}
