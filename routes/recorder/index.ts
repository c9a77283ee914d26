import { Type } from '@sinclair/typebox'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import type { FastifyPluginAsync } from 'fastify'

// Run from the source tree (tsx) the file is ../../public; compiled, dist/public (the build
// copies public/ there), else the source tree's beside dist/ (npm start in a checkout).
const CANDIDATES = ['../../public/recorder.js', '../../../public/recorder.js'].map(p => fileURLToPath(new URL(p, import.meta.url)))

/** The browser recorder script, read once at boot and served with an ETag. */
const recorder: FastifyPluginAsync = async (fastify) => {
  const file = CANDIDATES.find(p => existsSync(p))
  // A missing asset is a broken build: fail the boot, as a missing migration would.
  if (!file) {
    throw new Error(`public/recorder.js not found (looked in ${CANDIDATES.join(', ')}): the build must copy public/ to dist/public`)
  }
  const body = await readFile(file)
  const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`

  fastify.get('/recorder.js', {
    config: { auth: false },
    schema: {
      tags: ['recordings'],
      operationId: 'getRecorderScript',
      summary: 'The browser recorder script',
      description: 'The browser recorder script (docs/recording.md). Cached five minutes, then revalidated by ETag.',
      response: {
        200: {
          description: 'the script',
          headers: { ETag: { type: 'string', description: 'the script\'s ETag: send it back as If-None-Match' } },
          content: { 'text/javascript': { schema: Type.String() } }
        },
        304: {
          description: 'not modified (If-None-Match matched)',
          type: 'null',
          headers: { ETag: { type: 'string', description: 'the script\'s ETag' } }
        }
      }
    }
  }, async (request, reply) => {
    // Not versioned in its URL: browsers keep it five minutes, then revalidate for a 304.
    reply.header('cache-control', 'public, max-age=300')
    reply.header('etag', etag)
    const given = request.headers['if-none-match']
    if (given && given.split(',').some(tag => tag.trim().replace(/^W\//, '') === etag)) return reply.code(304).send()
    // Pages on any site load it with <script src>; nosniff makes the browser insist on the type.
    reply.header('x-content-type-options', 'nosniff')
    reply.header('cross-origin-resource-policy', 'cross-origin')
    return reply.type('text/javascript; charset=utf-8').send(body)
  })
}

export default recorder
