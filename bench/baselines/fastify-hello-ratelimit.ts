// Baseline: Fastify hello with @fastify/rate-limit on every request, in memory or (with
// REDIS_URL) in Redis: the limiter's own cost against bare hello, with nothing else around it.
import Fastify from 'fastify'
import rateLimit from '@fastify/rate-limit'
import { Redis } from 'ioredis'
import { closeOn, host, port } from './common.js'

const redis = process.env.REDIS_URL ? new Redis(process.env.REDIS_URL, { enableOfflineQueue: false, maxRetriesPerRequest: 0 }) : undefined
const app = Fastify({ logger: false })
const max = Number(process.env.RATE_LIMIT_MAX ?? 1_000_000_000)
await app.register(rateLimit, { global: true, max, timeWindow: 60_000, ...(redis ? { redis } : {}) })
app.get('/', async () => ({ hello: 'world' }))
await app.listen({ port, host })
closeOn(async () => { await app.close(); redis?.disconnect() })
