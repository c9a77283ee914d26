import type { BaseLogger } from 'pino'

/** What services need of a logger: Fastify's and a bare pino both fit. */
export type Logger = Pick<BaseLogger, 'debug' | 'info' | 'warn' | 'error'>
