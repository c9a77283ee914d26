import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { readFile, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { after, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { buildTestApp, createTestDatabase, tempDir, testConfig } from './support/app.js'

// The OpenAPI document is what clients generate from: Redocly's recommended rules must find
// nothing in it, and openapi-typescript must turn it into types naming every operation. Both
// CLIs run from node_modules with no network (telemetry and the update check off).

const run = promisify(execFile)
const ROOT = fileURLToPath(new URL('..', import.meta.url))
const REDOCLY = path.join(ROOT, 'node_modules/@redocly/cli/bin/cli.js')
const OPENAPI_TS = path.join(ROOT, 'node_modules/openapi-typescript/bin/cli.js')
const TSC = path.join(ROOT, 'node_modules/typescript/bin/tsc')
const ENV = { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true', NO_COLOR: '1' }
const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options']

interface Operation { operationId?: string, summary?: string, tags?: string[], security?: unknown[] }
interface LintProblem { ruleId: string, severity: string, message: string, location?: Array<{ pointer?: string }> }

const db = await createTestDatabase()
// The cron mount is optional: on, so that every operation is in the document.
const app = await buildTestApp(testConfig(db, { ENABLE_INTERNAL_CRON: true, CRON_SECRET: 'openapi-lint-secret' }))
const dir = await tempDir('openapi-lint-')
after(() => rm(dir, { recursive: true, force: true }))
const doc = (await app.inject('/docs/json')).json() as { paths: Record<string, Record<string, Operation>> }
const specFile = path.join(dir, 'openapi.json')
await writeFile(specFile, JSON.stringify(doc))
const operations = Object.entries(doc.paths).flatMap(([url, item]) =>
  Object.entries(item).filter(([method]) => METHODS.includes(method)).map(([method, op]) => ({ key: `${method} ${url}`, op })))

test('every operation has a unique camelCase operationId, a summary, tags and its security', () => {
  assert.ok(operations.length >= 30, `${operations.length} operations`)
  const ids = operations.map(({ op }) => op.operationId)
  for (const { key, op } of operations) {
    assert.match(op.operationId ?? '', /^[a-z][a-zA-Z0-9]*$/, `${key} has a camelCase operationId`)
    assert.ok(op.summary && op.summary.length <= 80, `${key} has a short summary`)
    assert.ok(op.tags && op.tags.length > 0, `${key} has tags`)
    assert.ok(Array.isArray(op.security), `${key} states its security`)
  }
  assert.equal(new Set(ids).size, ids.length, 'operationIds are unique')
  const publicOps = operations.filter(({ op }) => op.security!.length === 0).map(({ key }) => key).sort()
  assert.deepEqual(publicOps, [
    'get /api/v1/health', 'get /health', 'get /recorder.js',
    'post /api/v1/auth/login', 'post /api/v1/auth/refresh', 'post /api/v1/auth/signup'
  ])
})

test('2xx responses are described, the session envelope is one named schema, every response names its headers', () => {
  type Response = { description?: string, headers?: Record<string, unknown>, content?: Record<string, { schema?: { $ref?: string } }> }
  const responses = operations.flatMap(({ key, op }) =>
    Object.entries((op as { responses?: Record<string, Response> }).responses ?? {}).map(([status, r]) => ({ key, status, r })))
  for (const { key, status, r } of responses) {
    if (status.startsWith('2')) assert.ok(r.description && r.description !== 'Default Response', `${key} ${status} is described`)
    assert.ok(r.headers?.['X-Request-Id'], `${key} ${status} names X-Request-Id`)
  }
  const components = (doc as { components?: { schemas?: Record<string, unknown> } }).components
  assert.ok(components?.schemas?.SessionEnvelope, 'SessionEnvelope is a component')
  for (const [url, status] of [['/api/v1/auth/signup', '201'], ['/api/v1/auth/login', '200'], ['/api/v1/auth/refresh', '200']] as const) {
    const r = responses.find(x => x.key === `post ${url}` && x.status === status)!.r
    assert.equal(r.content?.['application/json']?.schema?.$ref, '#/components/schemas/SessionEnvelope', url)
  }
  const script = responses.find(x => x.key === 'get /recorder.js' && x.status === '200')!.r
  assert.ok(script.headers?.ETag, 'the recorder script names its ETag')
  const limited = responses.find(x => x.key === 'get /api/v1/tenant' && x.status === '200')!.r
  assert.ok(limited.headers?.RateLimit && limited.headers['RateLimit-Policy'], 'a rate-limited route names the RateLimit fields')
  const probe = responses.find(x => x.key === 'get /health' && x.status === '200')!.r
  assert.equal(probe.headers?.RateLimit, undefined, 'the probes are not rate limited')
  assert.ok(responses.find(x => x.key === 'get /api/v1/tenant' && x.status === '4XX')!.r.headers?.['Retry-After'])
})

test('Redocly\'s recommended rules find no error and no warning', { timeout: 60_000 }, async () => {
  await writeFile(path.join(dir, 'redocly.yaml'), 'extends:\n  - recommended\n')
  // Exit code 1 when there are errors: the report on stdout says which.
  const out = await run(process.execPath, [REDOCLY, 'lint', '--format=json', 'openapi.json'], { cwd: dir, env: ENV })
    .catch((err: { stdout?: string, stderr?: string }) => ({ stdout: err.stdout ?? '', stderr: err.stderr ?? '' }))
  const report = JSON.parse(out.stdout) as { totals: { errors: number, warnings: number }, problems: LintProblem[] }
  const listed = report.problems.map(p => `${p.severity} ${p.ruleId} at ${p.location?.[0]?.pointer}: ${p.message}`)
  assert.deepEqual([report.totals.errors, report.totals.warnings], [0, 0], listed.join('\n'))
})

test('openapi-typescript generates types that name every operation', { timeout: 60_000 }, async () => {
  const typesFile = path.join(dir, 'openapi.d.ts')
  await run(process.execPath, [OPENAPI_TS, specFile, '--output', typesFile], { cwd: dir, env: ENV })
  const types = await readFile(typesFile, 'utf8')
  assert.match(types, /export interface operations \{/)
  for (const { key, op } of operations) assert.ok(types.includes(`    ${op.operationId}: {`), `${key}: ${op.operationId} is in the types`)
  // A recording event's payload is any JSON object, not an empty one.
  assert.doesNotMatch(types, /payload\??: Record<string, never>/)
  assert.match(types, /payload: \{\s+\[key: string\]: unknown;\s+\}/)
  // The generated types compile on their own, strictly (what a client project would import).
  await run(process.execPath, [TSC, '--noEmit', '--strict', '--skipLibCheck', 'false', typesFile], { cwd: dir, env: ENV })
})
