import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { test } from 'node:test'
import { errorCatalog } from '../errors.js'
import { buildTestApp, createTestDatabase, testConfig } from './support/app.js'

// docs/api.md against the running app: its operations are the OpenAPI document's (plus the
// routes the document hides on purpose, each marked so), and each section names the statuses,
// fields and error codes the document has. The conventions parsed here are described at the
// top of docs/api.md.

const API_MD = readFileSync(new URL('../docs/api.md', import.meta.url), 'utf8')
const HIDDEN_MARK = ' (not in the OpenAPI document)'
const HEADING = /^### `([A-Z]+) (\/\S*)`( \(not in the OpenAPI document\))?$/
const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'options']
const AUTH_KINDS = new Set(['tenant', 'session', 'operator', 'public'])

interface Section { key: string, hidden: boolean, line: number, text: string }
type Schema = { properties?: Record<string, unknown> }
interface Operation {
  parameters?: Array<{ name: string, in: string }>
  requestBody?: { content?: Record<string, { schema?: Schema }> }
  responses?: Record<string, { content?: Record<string, { schema?: Schema }> }>
}

/** OpenAPI writes /a/{id}, Fastify /a/:id; this page uses Fastify's form. */
const fastifyPath = (path: string) => path.replace(/\{(\w+)\}/g, ':$1')

/** Every operation heading of the page, with its section's text (up to the next heading of level 1–3). */
function parseSections (markdown: string): Map<string, Section> {
  const sections = new Map<string, Section>()
  let current: Section | null = null
  let fence = false
  for (const [i, line] of markdown.split('\n').entries()) {
    if (line.startsWith('```')) fence = !fence
    if (!fence && /^#{1,3} /.test(line)) {
      current = null
      const match = HEADING.exec(line)
      if (match) {
        const key = `${match[1]} ${match[2]}`
        assert.ok(!sections.has(key), `docs/api.md:${i + 1}: ${key} has two headings`)
        current = { key, hidden: match[3] !== undefined, line: i + 1, text: '' }
        sections.set(key, current)
      } else {
        assert.ok(!line.startsWith('### `'), `docs/api.md:${i + 1}: an operation heading must be exactly ### \`METHOD /path\`: ${line}`)
      }
      continue
    }
    if (current) current.text += line + '\n'
  }
  return sections
}

/** The text of a section's `- **Name:**` bullet, continuation lines included, or null. */
function bullet (section: Section, name: string): string | null {
  const lines = section.text.split('\n')
  const start = lines.findIndex(l => l.startsWith(`- **${name}:**`))
  if (start < 0) return null
  const end = lines.findIndex((l, i) => i > start && !l.startsWith('  '))
  return lines.slice(start, end < 0 ? undefined : end).join(' ')
}

/** Every identifier written in backticks in a section (`{sessions: [{id}], nextCursor}` gives four). */
function backtickedWords (text: string): Set<string> {
  const spans = text.match(/`[^`]+`/g) ?? []
  return new Set(spans.flatMap(span => span.match(/\w+/g) ?? []))
}

/** The routes the app serves, from its route tree: `METHOD /path`, HEAD included. */
function servedRoutes (tree: string): Set<string> {
  const served = new Set<string>()
  const prefixes: string[] = []
  for (const line of tree.split('\n')) {
    const match = /^((?:│ {3}| {4})*)(?:├── |└── )(.+?)(?: \(([A-Z, ]+)\))?$/.exec(line)
    if (!match) continue
    const depth = match[1]!.length / 4
    const path = (depth > 0 ? prefixes[depth - 1]! : '') + match[2]!
    prefixes[depth] = path
    prefixes.length = depth + 1
    for (const method of match[3]?.split(', ') ?? []) served.add(`${method} ${path}`)
  }
  return served
}

/** What differs between the page and the app; empty when they agree. */
function compare (sections: Map<string, Section>, operations: Map<string, Operation>, served: Set<string>): string[] {
  const problems: string[] = []
  const documented = [...sections.values()].filter(s => !s.hidden).map(s => s.key)
  const hidden = [...sections.values()].filter(s => s.hidden).map(s => s.key)
  for (const key of operations.keys()) {
    if (!documented.includes(key)) problems.push(`${key} is in the OpenAPI document but has no heading in docs/api.md`)
  }
  for (const key of documented) {
    if (!operations.has(key)) problems.push(`${key} has a heading in docs/api.md but is not in the OpenAPI document`)
  }
  // A route the document hides (schema.hide) is still part of the contract.
  for (const key of served) {
    if (operations.has(key) || hidden.includes(key)) continue
    problems.push(`${key} is served, not in the OpenAPI document: give it a heading marked${HIDDEN_MARK}`)
  }
  for (const key of hidden) {
    if (!served.has(key)) problems.push(`${key} is documented${HIDDEN_MARK} but the app does not serve it`)
    if (operations.has(key)) problems.push(`${key} is marked${HIDDEN_MARK} but it is there`)
  }
  return problems
}

const db = await createTestDatabase()
// Every optional mount on, so that every route exists: the cron mount and the public /metrics.
const app = await buildTestApp(testConfig(db, {
  ENABLE_INTERNAL_CRON: true,
  CRON_SECRET: 'api-doc-secret',
  METRICS_ENABLED: true,
  METRICS_PUBLIC: true,
  CORS_ORIGINS: 'https://app.example.test'
}))
const openapi = (await app.inject('/docs/json')).json() as { paths: Record<string, Record<string, Operation>> }
const operations = new Map(Object.entries(openapi.paths).flatMap(([path, item]) => Object.entries(item)
  .filter(([method]) => METHODS.includes(method))
  .map(([method, op]): [string, Operation] => [`${method.toUpperCase()} ${fastifyPath(path)}`, op])))
// HEAD duplicates every GET, the /docs UI's own routes (hidden from the document) serve the document itself, and
// the CORS preflight answers OPTIONS on every path (docs/api.md, "CORS").
const served = new Set([...servedRoutes(app.printRoutes({ commonPrefix: false }))]
  .filter(key => !key.startsWith('HEAD ') && !key.startsWith('OPTIONS ') && !/^[A-Z]+ \/docs(\/|$)/.test(key)))
const sections = parseSections(API_MD)

test('docs/api.md has a heading for every operation the app serves, and none for an operation it does not', () => {
  // The route tree was read right: the document's operations are all in it.
  assert.ok(operations.size >= 30, `the OpenAPI document lists ${operations.size} operations`)
  assert.deepEqual([...operations.keys()].filter(key => !served.has(key)), [], 'operations in the document the route tree does not show')
  assert.ok(served.has('GET /metrics'), 'METRICS_PUBLIC serves /metrics on the main port')
  assert.deepEqual(compare(sections, operations, served), [])
})

test('the comparison notices a route without docs and a heading without a route', () => {
  const line = '### `GET /api/v1/tenant`\n'
  assert.ok(API_MD.includes(line))
  assert.deepEqual(compare(parseSections(API_MD.replace(line, '')), operations, served),
    ['GET /api/v1/tenant is in the OpenAPI document but has no heading in docs/api.md'])
  assert.deepEqual(compare(parseSections(API_MD + '\n### `POST /api/v1/nowhere`\n'), operations, served),
    ['POST /api/v1/nowhere has a heading in docs/api.md but is not in the OpenAPI document'])
  assert.deepEqual(compare(parseSections(API_MD.replace('### `GET /metrics`' + HIDDEN_MARK, '### `GET /metrics`')), operations, served), [
    'GET /metrics has a heading in docs/api.md but is not in the OpenAPI document',
    `GET /metrics is served, not in the OpenAPI document: give it a heading marked${HIDDEN_MARK}`
  ])
  assert.throws(() => parseSections(API_MD + '\n### `GET /api/v1/tenant` again\n'), /must be exactly/)
})

test('each operation\'s section names who may call it, as the route declares', () => {
  const declared = new Map(app.lifecycleRoutes.map(r => [`${r.method} ${r.url}`, r.auth === false ? 'public' : r.auth]))
  for (const section of sections.values()) {
    const who = bullet(section, 'Who')
    assert.ok(who, `${section.key} (docs/api.md:${section.line}) has a **Who:** bullet`)
    const kind = /`(\w+)`/.exec(who)?.[1]
    assert.ok(kind && AUTH_KINDS.has(kind), `${section.key}: **Who:** starts with one of ${[...AUTH_KINDS].join(', ')}`)
    // Routes declared before the entitlement plugin (only /metrics) are not in its list.
    if (!section.hidden) assert.equal(kind, declared.get(section.key), `${section.key}: who may call it`)
  }
})

test('each operation\'s section has the document\'s statuses, request fields and response fields', () => {
  for (const section of sections.values()) {
    const op = operations.get(section.key)
    const where = `${section.key} (docs/api.md:${section.line})`
    const response = bullet(section, 'Response')
    assert.ok(response, `${where} has a **Response:** bullet`)
    const statuses = [...response.matchAll(/`([1-5]\d\d)`/g)].map(m => m[1]!)
    assert.ok(statuses.some(s => s.startsWith('2')), `${where} names its 2xx status`)
    if (!op) continue

    const explicit = Object.keys(op.responses ?? {}).filter(code => /^\d{3}$/.test(code))
    assert.deepEqual([...new Set(statuses)].sort(), explicit.sort(), `${where}: the statuses of **Response:** are the document's`)

    const words = backtickedWords(section.text)
    const body = op.requestBody?.content?.['application/json']?.schema
    const requestFields = [...(op.parameters ?? []).map(p => p.name), ...Object.keys(body?.properties ?? {})]
    for (const field of requestFields) assert.ok(words.has(field), `${where} names the request field \`${field}\``)
    for (const code of explicit.filter(c => c.startsWith('2'))) {
      const schema = op.responses![code]!.content?.['application/json']?.schema
      for (const field of Object.keys(schema?.properties ?? {})) {
        assert.ok(words.has(field), `${where} names the ${code} field \`${field}\``)
      }
    }

    for (const [, status, code] of (bullet(section, 'Errors') ?? '').matchAll(/`(\d{3}) ([A-Z_]+)`/g)) {
      const entry = (errorCatalog as Record<string, { status: number }>)[code!]
      assert.equal(entry?.status, Number(status), `${where}: ${status} ${code} is a code of errors.ts with that status`)
      const covered = op.responses?.[status!] ?? op.responses?.[`${status![0]}XX`]
      assert.ok(covered, `${where}: the document has a ${status} response`)
    }
  }
})

test('the routes outside the OpenAPI document answer what docs/api.md says', async () => {
  const hidden = [...sections.values()].filter(s => s.hidden)
  assert.ok(hidden.length > 0)
  for (const section of hidden) {
    const [method, url] = section.key.split(' ') as [string, string]
    const res = await app.inject({ method: method as 'GET', url })
    const statuses = [...bullet(section, 'Response')!.matchAll(/`([1-5]\d\d)`/g)].map(m => Number(m[1]))
    assert.ok(statuses.includes(res.statusCode), `${section.key} answered ${res.statusCode}, docs/api.md says ${statuses.join(', ')}`)
  }
})
