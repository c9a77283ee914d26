// Baseline: bare Fastify hello world (the framework's ceiling on this machine).
import Fastify from 'fastify'
import { closeOn, host, port } from './common.js'

const app = Fastify({ logger: false })
app.get('/', async () => ({ hello: 'world' }))
await app.listen({ port, host })
closeOn(() => app.close())
