// A request fuzzer driven by the OpenAPI document (test/fuzz-openapi.test.ts): it reads the
// operations, generates values from their JSON Schemas with fast-check, breaks them on purpose,
// and checks each response against the schema the document gives for its status.
import { Ajv } from 'ajv'
import { Ajv2020 } from 'ajv/dist/2020.js'
import addFormats from 'ajv-formats'
import fc from 'fast-check'
import { errorCatalog, problemType, type ErrorCode } from '../../errors.js'

// The document is plain JSON; its schemas are walked generically.
export type Schema = Record<string, any>

export interface Parameter { name: string, in: 'path' | 'query', required: boolean, schema: Schema }
export interface Operation {
  /** `POST /api/v1/tenant/members/{userId}`, as the document names it. */
  key: string
  method: string
  path: string
  params: Parameter[]
  query: Parameter[]
  /** The application/json request body schema, if the operation takes one. */
  body: Schema | null
  /** Documented responses by status: the schema of their content, or null for no content. */
  responses: Map<number, { mediaType: string, schema: Schema } | null>
}

/** Replaces every local `$ref` with what it points at (the document has none today; it may). */
function deref (doc: any, node: any, seen: string[] = []): any {
  if (Array.isArray(node)) return node.map(n => deref(doc, n, seen))
  if (!node || typeof node !== 'object') return node
  if (typeof node.$ref === 'string') {
    const ref: string = node.$ref
    if (!ref.startsWith('#/')) throw new Error(`only local $refs are supported: ${ref}`)
    if (seen.includes(ref)) throw new Error(`recursive $ref ${ref}`)
    const target = ref.slice(2).split('/').reduce((o, k) => o?.[k.replace(/~1/g, '/').replace(/~0/g, '~')], doc)
    if (target === undefined) throw new Error(`dangling $ref ${ref}`)
    return deref(doc, target, [...seen, ref])
  }
  return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, deref(doc, v, seen)]))
}

export function operationsOf (document: any): Operation[] {
  const doc = deref(document, document)
  const ops: Operation[] = []
  for (const [path, item] of Object.entries<any>(doc.paths)) {
    for (const [method, op] of Object.entries<any>(item)) {
      if (!['get', 'put', 'post', 'delete', 'patch'].includes(method)) continue
      const parameters: Parameter[] = (op.parameters ?? [])
        .map((p: any) => ({ name: p.name, in: p.in, required: p.required === true, schema: p.schema ?? {} }))
      const responses = new Map<number, { mediaType: string, schema: Schema } | null>()
      for (const [status, response] of Object.entries<any>(op.responses ?? {})) {
        const [mediaType, content] = Object.entries<any>(response.content ?? {})[0] ?? []
        responses.set(Number(status), mediaType ? { mediaType, schema: content.schema ?? {} } : null)
      }
      ops.push({
        key: `${method.toUpperCase()} ${path}`,
        method: method.toUpperCase(),
        path,
        params: parameters.filter(p => p.in === 'path'),
        query: parameters.filter(p => p.in === 'query'),
        body: op.requestBody?.content?.['application/json']?.schema ?? null,
        responses
      })
    }
  }
  return ops
}

// ---------------------------------------------------------------------------------------------
// Values from schemas

/** Per-field pools of meaningful values (ids that exist, another tenant's ids): `where` is `body.events.*.id`, `params.userId`… */
export type Hints = (where: string) => fc.Arbitrary<unknown> | undefined

// Strings that have broken services before: NUL (Postgres refuses it in text), a lone
// surrogate (invalid in jsonb), SQL and path syntax, look-alike whitespace, long runs.
const NASTY = [
  '', ' ', '\u0000', 'a\u0000b', '\ud800', '\udfff x', '\u202e\u0301', "' OR '1'='1", '"; DROP TABLE users; --', '../../etc/passwd', '%00',
  '%zz', '$' + '{7*7}', '{{7*7}}', '<script>x</script>', 'null', 'undefined', 'NaN', '-1', '0', '1e309', '\t\n\r', '\u00a0\u2028\u2029',
  'Ω≈ç√∫', '😀'.repeat(3), 'x'.repeat(300)
]

function text (minLength = 0, maxLength = 80): fc.Arbitrary<string> {
  const max = Math.min(maxLength, Math.max(minLength, 80))
  const fits = (s: string) => s.length >= minLength && s.length <= maxLength
  return fc.oneof(
    { weight: 8, arbitrary: fc.string({ minLength, maxLength: max }) },
    { weight: 1, arbitrary: fc.string({ minLength, maxLength: max, unit: 'binary' }) },
    { weight: 1, arbitrary: fc.constantFrom(...NASTY).filter(fits) }
  )
}

const pad = (n: number, w: number) => String(n).padStart(w, '0')
/** RFC 3339 timestamps, with the corners: year 0000 and 9999, leap seconds, odd offsets, lower case. */
const dateTime: fc.Arbitrary<string> = fc.oneof(
  {
    weight: 12,
    arbitrary: fc.date({ min: new Date('2000-01-01T00:00:00Z'), max: new Date(), noInvalidDate: true }).map(d => d.toISOString())
  },
  {
    weight: 1,
    arbitrary: fc.date({ min: new Date('1960-01-01T00:00:00Z'), max: new Date(Date.now() + 3 * 86_400_000), noInvalidDate: true })
      .map(d => d.toISOString())
  },
  {
    weight: 1,
    arbitrary: fc.record({
      y: fc.oneof(fc.integer({ min: 0, max: 9999 }), fc.constantFrom(0, 1, 1969, 1970, 2038, 9999)),
      mo: fc.integer({ min: 1, max: 12 }),
      d: fc.integer({ min: 1, max: 28 }),
      h: fc.integer({ min: 0, max: 23 }),
      mi: fc.integer({ min: 0, max: 59 }),
      s: fc.constantFrom(0, 30, 59, 60),
      frac: fc.constantFrom('', '.5', '.123456789'),
      zone: fc.constantFrom('Z', 'z', '+00:00', '-23:59', '+14:00', '+05:30'),
      t: fc.constantFrom('T', 't')
    }).map(v => `${pad(v.y, 4)}-${pad(v.mo, 2)}-${pad(v.d, 2)}${v.t}${pad(v.h, 2)}:${pad(v.mi, 2)}:${pad(v.s, 2)}${v.frac}${v.zone}`)
  }
)

const email = (maxLength = 254) => fc.oneof(
  { weight: 3, arbitrary: fc.stringMatching(/^[a-z0-9][a-z0-9._+-]{0,20}$/).map(local => `${local}@example.test`) },
  { weight: 1, arbitrary: fc.emailAddress() },
  { weight: 1, arbitrary: fc.constantFrom('UPPER.Case@Example.TEST', ' padded@example.test ', 'a@b', 'x@example.test\u0000') }
).filter(s => s.length <= maxLength)

function stringValue (schema: Schema): fc.Arbitrary<string> {
  const { minLength = 0, maxLength = 10_000 } = schema
  const fits = (s: string) => s.length >= minLength && s.length <= maxLength
  if (schema.format === 'uuid') {
    return fc.oneof({ weight: 5, arbitrary: fc.uuid() }, { weight: 1, arbitrary: fc.uuid().map(u => u.toUpperCase()) })
  }
  if (schema.format === 'email') return email(maxLength)
  if (schema.format === 'date-time') return dateTime
  if (schema.pattern) {
    const re = new RegExp(schema.pattern, 'u')
    try {
      return fc.stringMatching(re).filter(fits)
    } catch {
      // fast-check's stringMatching has no lookaheads: generate freely, keep the matches.
      return fc.oneof(fc.string({ minLength: Math.max(minLength, 1), maxLength: Math.min(maxLength, 60) }), text(minLength, maxLength))
        .filter(s => fits(s) && re.test(s))
    }
  }
  return text(minLength, maxLength)
}

/** Any JSON object; now and then with keys and strings from the whole of Unicode (NUL and lone surrogates included). */
const jsonObject = (minKeys = 0) => fc.dictionary(
  fc.oneof(
    { weight: 20, arbitrary: fc.string({ maxLength: 12 }) },
    { weight: 1, arbitrary: fc.constantFrom('\u0000', '\ud800', '$where', '__proto__', 'constructor') }
  ),
  fc.oneof(
    { weight: 10, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
    { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2, stringUnit: 'binary' }) }
  ),
  { minKeys, maxKeys: 6 }
)

/** Values that satisfy `schema`, mostly (a value a schema keyword cannot express, such as an unknown id, is the point). */
export function valueFor (schema: Schema, hints: Hints, where: string): fc.Arbitrary<unknown> {
  const plain = plainValueFor(schema, hints, where)
  const hint = hints(where)
  return hint ? fc.oneof({ weight: 3, arbitrary: hint }, { weight: 1, arbitrary: plain }) : plain
}

function plainValueFor (schema: Schema, hints: Hints, where: string): fc.Arbitrary<unknown> {
  if (schema.const !== undefined) return fc.constant(schema.const)
  if (Array.isArray(schema.enum)) return fc.constantFrom(...schema.enum)
  const branches = schema.anyOf ?? schema.oneOf
  if (Array.isArray(branches)) return fc.oneof(...branches.map((b: Schema) => plainValueFor(b, hints, where)))
  if (Array.isArray(schema.type)) return fc.oneof(...schema.type.map((t: string) => plainValueFor({ ...schema, type: t }, hints, where)))
  switch (schema.type) {
    case 'string': return stringValue(schema)
    case 'integer': {
      const min = schema.minimum ?? -(2 ** 31)
      const max = schema.maximum ?? 2 ** 31
      return fc.oneof(fc.integer({ min, max }), fc.constantFrom(min, max))
    }
    case 'number': return fc.double({ min: schema.minimum, max: schema.maximum, noNaN: true, noDefaultInfinity: true })
    case 'boolean': return fc.boolean()
    case 'null': return fc.constant(null)
    case 'array': {
      const items = valueFor(schema.items ?? {}, hints, `${where}.*`)
      const minLength = schema.minItems ?? 0
      const maxLength = Math.max(minLength, Math.min(schema.maxItems ?? 4, 4))
      return schema.uniqueItems
        ? fc.uniqueArray(items, { minLength, maxLength, selector: v => JSON.stringify(v) })
        : fc.array(items, { minLength, maxLength })
    }
    case 'object': {
      const properties: Record<string, Schema> = schema.properties ?? {}
      if (Object.keys(properties).length === 0) return jsonObject(schema.minProperties ?? 0)
      const model = Object.fromEntries(Object.entries(properties).map(([k, s]) => [k, valueFor(s, hints, `${where}.${k}`)]))
      return fc.record(model, { requiredKeys: schema.required ?? [] })
        .filter(o => Object.keys(o).length >= (schema.minProperties ?? 0))
    }
    default: return fc.jsonValue({ maxDepth: 2 })
  }
}

// ---------------------------------------------------------------------------------------------
// Breaking requests on purpose

/** The parts of a request, before it is rendered into a URL and a payload. */
export interface Parts {
  params: Record<string, string>
  query: Record<string, string | string[]>
  /** The JSON body (undefined: none). */
  body?: unknown
  /** Sent as it is instead of the JSON body (invalid JSON, other media types). */
  rawBody?: string
  /** undefined: application/json when there is a body; null: no Content-Type at all. */
  contentType?: string | null
  /** A path segment sent without percent-encoding (undecodable escapes). */
  rawParams?: Record<string, string>
}

export interface Mutation {
  label: string
  parts: Parts
  /** Malformed whatever the schema says: broken JSON, media types, sizes, undecodable URLs, ids that cannot exist. */
  byConstruction: boolean
}

const clone = <T>(v: T): T => structuredClone(v)

/** A value of a type no coercion turns into what `schema` wants. */
function wrongTypeFor (schema: Schema): unknown[] {
  const types: string[] = Array.isArray(schema.type) ? schema.type : schema.type ? [schema.type] : []
  if (schema.anyOf || schema.enum || schema.const !== undefined) return [{ not: 'this' }, [[1]], 12.5]
  if (types.includes('object') || types.includes('array')) return ['a string', 42, true]
  // Ajv coerces scalars into each other (and wraps scalars into arrays), never objects: an
  // object or a nested array is wrong for every scalar type.
  return [{ nested: true }, [[1]], [{}]]
}

/** Every node of `value` that `schema` describes, with its path. */
function nodes (
  schema: Schema,
  value: unknown,
  path: Array<string | number> = []
): Array<{ path: Array<string | number>, schema: Schema, value: unknown }> {
  const out = [{ path, schema, value }]
  const branch = (schema.anyOf ?? schema.oneOf)?.[0]
  if (branch && !schema.type) return out
  if (Array.isArray(value) && schema.items) value.forEach((v, i) => out.push(...nodes(schema.items, v, [...path, i])))
  else if (value && typeof value === 'object' && schema.properties) {
    for (const [k, s] of Object.entries<Schema>(schema.properties)) {
      if (k in (value as object)) out.push(...nodes(s, (value as any)[k], [...path, k]))
    }
  }
  return out
}

function setAt (root: unknown, path: Array<string | number>, value: unknown, remove = false): unknown {
  if (path.length === 0) return value
  const copy = clone(root) as any
  let node = copy
  for (const key of path.slice(0, -1)) node = node[key]
  const last = path[path.length - 1]!
  if (remove) delete node[last]
  else node[last] = value
  return copy
}

const BAD_UUIDS = [
  'not-a-uuid', '00000000-0000-0000-0000-00000000000g', '{6f1c5b7e-1d2a-4c1b-9c2e-0a1b2c3d4e5f}', '6f1c5b7e1d2a4c1b9c2e0a1b2c3d4e5f',
  '6f1c5b7e-1d2a-4c1b-9c2e-0a1b2c3d4e5f0', ' 6f1c5b7e-1d2a-4c1b-9c2e-0a1b2c3d4e5f', '-1', '0'
]
const BAD_DATES = [
  'yesterday', '2024-02-30T00:00:00Z', '2024-01-01', '2024-01-01T25:00:00Z', '1e12', '2024-01-01T00:00:00', '+275760-09-13T00:00:00.000Z'
]
const BAD_EMAILS = ['no-at-sign', '@example.test', 'a@', 'a b@example.test', 'a@@example.test']
const MEDIA_TYPES = [
  'text/plain', 'application/xml', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/octet-stream', null
]
const BROKEN_JSON = ['{', '{"a":', '[1,2', 'nul', '{"a":1}}', "{'a':1}", '{"a":1,}', '\u0000', '{"a":"\\x"}', '\ufeff{}', '{"a":01}']

/** Breaks one thing in a request's body, parameters or framing. */
export function mutate (g: fc.GeneratorValue, op: Operation, base: Parts, bodyLimit: number): Mutation | null {
  const choices: Array<() => Mutation | null> = []
  // Path parameters that name a row by its server-made UUID (a recordingId is the client's own name).
  const idLike = (name: string) => name === 'id' || name === 'userId'

  if (op.body) {
    choices.push(
      () => ({
        label: 'broken JSON', byConstruction: true, parts: { ...base, body: undefined, rawBody: g(fc.constantFrom, ...BROKEN_JSON) }
      }),
      () => ({ label: 'empty JSON body', byConstruction: true, parts: { ...base, body: undefined, rawBody: '' } }),
      () => ({
        label: 'other media type',
        byConstruction: true,
        parts: { ...base, body: undefined, rawBody: JSON.stringify(base.body ?? {}), contentType: g(fc.constantFrom, ...MEDIA_TYPES) }
      }),
      () => {
        // One string over the body limit: 413 before anything reads it.
        const size = bodyLimit + g(fc.integer, { min: 1, max: 64 * 1024 })
        return {
          label: 'body over the limit',
          byConstruction: true,
          parts: { ...base, body: undefined, rawBody: JSON.stringify({ pad: 'x'.repeat(size) }) }
        }
      },
      () => ({
        label: 'body of the wrong type',
        byConstruction: false,
        parts: { ...base, body: g(fc.constantFrom, [], 'text', 42, true, null, [base.body]) }
      })
    )
    const all = nodes(op.body, base.body)
    const objects = all.filter(n => n.value && typeof n.value === 'object' && !Array.isArray(n.value) && n.schema.type === 'object')
    const required = objects.flatMap(n => (n.schema.required ?? []).map((k: string) => [...n.path, k]))
    if (required.length) {
      choices.push(() => ({
        label: 'required property missing',
        byConstruction: false,
        parts: { ...base, body: setAt(base.body, g(fc.constantFrom, ...required), undefined, true) }
      }))
    }
    const closed = objects.filter(n => n.schema.additionalProperties === false)
    if (closed.length) {
      choices.push(() => {
        const at = g(fc.constantFrom, ...closed).path
        const key = g(fc.constantFrom, 'unexpected', '__proto__', 'constructor', 'isAdmin', 'tenantId')
        const target = clone(base.body) as any
        const node = at.reduce((o: any, k: string | number) => o[k], target)
        Object.defineProperty(node, key, { value: g(fc.jsonValue, { maxDepth: 1 }), enumerable: true, configurable: true, writable: true })
        return { label: `extra property ${key}`, byConstruction: false, parts: { ...base, body: target } }
      })
    }
    const leaves = all.filter(n => n.path.length > 0)
    if (leaves.length) {
      choices.push(() => {
        const n = g(fc.constantFrom, ...leaves)
        return {
          label: `wrong type at ${n.path.join('.')}`,
          byConstruction: false,
          parts: { ...base, body: setAt(base.body, n.path, g(fc.constantFrom, ...wrongTypeFor(n.schema))) }
        }
      })
    }
    const strings = all.filter(n => typeof n.value === 'string' && n.path.length > 0)
    if (strings.length) {
      choices.push(() => {
        const n = g(fc.constantFrom, ...strings)
        const bad = invalidString(g, n.schema)
        if (bad === null) return null
        return {
          label: `invalid string at ${n.path.join('.')}`, byConstruction: false, parts: { ...base, body: setAt(base.body, n.path, bad) }
        }
      })
    }
    const numbers = all.filter(n =>
      typeof n.value === 'number' && (n.schema.minimum !== undefined || n.schema.maximum !== undefined || n.schema.type === 'integer'))
    if (numbers.length) {
      choices.push(() => {
        const n = g(fc.constantFrom, ...numbers)
        // The strings are what Ajv's coercion turns into Infinity (ajv-validator/ajv#2212).
        const bad = g(fc.constantFrom,
          (n.schema.minimum ?? 0) - 1, (n.schema.maximum ?? 2 ** 53) + 1, 1.5, -0.5, 1e308, '1e400', 'Infinity', '-Infinity')
        return {
          label: `number out of range at ${n.path.join('.')}`,
          byConstruction: false,
          parts: { ...base, body: setAt(base.body, n.path, bad) }
        }
      })
    }
    const arrays = all.filter(n => Array.isArray(n.value) && (n.schema.minItems !== undefined || n.schema.maxItems !== undefined))
    if (arrays.length) {
      choices.push(() => {
        const n = g(fc.constantFrom, ...arrays)
        const items = n.value as unknown[]
        const tooMany = n.schema.maxItems !== undefined && items.length > 0
          ? Array.from({ length: n.schema.maxItems + 1 }, (_, i) => items[i % items.length])
          : null
        const bad = tooMany && g(fc.boolean) ? tooMany : []
        return {
          label: `array of ${bad.length} at ${n.path.join('.') || 'body'}`,
          byConstruction: false,
          parts: { ...base, body: setAt(base.body, n.path, bad) }
        }
      })
    }
  }

  for (const p of op.params) {
    choices.push(() => {
      const bad = invalidString(g, p.schema)
      if (bad === null) return null
      return {
        label: `invalid path parameter ${p.name}`, byConstruction: false, parts: { ...base, params: { ...base.params, [p.name]: bad } }
      }
    })
    choices.push(() => ({
      label: `undecodable path parameter ${p.name}`,
      byConstruction: true,
      parts: { ...base, rawParams: { ...base.rawParams, [p.name]: g(fc.constantFrom, '%zz', '%', 'a%2', '%E0%A4%A', '%C0%AF') } }
    }))
    if (idLike(p.name)) {
      // A string parameter that names a row: ids that cannot exist answer 404, never 500.
      choices.push(() => ({
        label: `malformed id ${p.name}`,
        byConstruction: true,
        parts: { ...base, params: { ...base.params, [p.name]: g(fc.constantFrom, ...BAD_UUIDS, '\u0000', "'; SELECT 1; --") } }
      }))
    }
  }
  for (const q of op.query) {
    choices.push(() => {
      const bad = q.schema.type === 'integer' || q.schema.type === 'number'
        ? g(fc.constantFrom, 'abc', '1.5', '', '1e400', 'Infinity', '-1e400',
          String((q.schema.minimum ?? 0) - 1), String((q.schema.maximum ?? 2 ** 53) + 1), '0x10', ' 1')
        : invalidString(g, q.schema)
      if (bad === null) return null
      return {
        label: `invalid query parameter ${q.name}`, byConstruction: false, parts: { ...base, query: { ...base.query, [q.name]: bad } }
      }
    })
    choices.push(() => ({
      label: `repeated query parameter ${q.name}`,
      byConstruction: false,
      parts: { ...base, query: { ...base.query, [q.name]: ['1', 'two'] } }
    }))
    if (q.required) {
      choices.push(() => {
        const query = { ...base.query }
        delete query[q.name]
        return { label: `query parameter ${q.name} missing`, byConstruction: false, parts: { ...base, query } }
      })
    }
  }
  if (choices.length === 0) return null
  // By index: fast-check prints the generated values of a counterexample, and an index reads better than a closure.
  return choices[g(fc.nat, choices.length - 1)]!()
}

/** A string `schema` refuses, or null when it refuses none (a plain unbounded string). */
function invalidString (g: fc.GeneratorValue, schema: Schema): string | null {
  const options: string[] = []
  if (schema.format === 'uuid') options.push(...BAD_UUIDS)
  if (schema.format === 'date-time') options.push(...BAD_DATES)
  if (schema.format === 'email') options.push(...BAD_EMAILS)
  if (schema.maxLength !== undefined) {
    options.push('x'.repeat(schema.maxLength + 1), 'é'.repeat(schema.maxLength + 1), 'y'.repeat(Math.max(schema.maxLength * 50, 100_000)))
  }
  if (schema.minLength) options.push('')
  if (schema.pattern) options.push('-leading-dash', 'has space', 'x'.repeat(300), 'ünïcode', '\u0000')
  if (schema.anyOf || schema.enum) options.push('not-one-of-them', 'OWNER', '')
  if (options.length === 0) return null
  return g(fc.constantFrom, ...options)
}

// ---------------------------------------------------------------------------------------------
// Rendering and judging

// encodeURIComponent throws on a lone surrogate; the URL carries U+FFFD instead.
const encode = (s: string) =>
  encodeURIComponent(s.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd'))

export function render (op: Operation, parts: Parts) {
  const path = op.path.replace(/\{(\w+)\}/g, (_, name: string) => parts.rawParams?.[name] ?? encode(parts.params[name] ?? ''))
  const query = Object.entries(parts.query)
    .flatMap(([k, v]) => (Array.isArray(v) ? v : [v]).map(x => `${encode(k)}=${encode(x)}`)).join('&')
  const headers: Record<string, string> = {}
  let payload: string | undefined
  if (parts.rawBody !== undefined) payload = parts.rawBody
  else if (parts.body !== undefined) payload = JSON.stringify(parts.body)
  if (payload !== undefined) {
    const type = parts.contentType === undefined ? 'application/json' : parts.contentType
    if (type !== null) headers['content-type'] = type
  }
  return { url: query ? `${path}?${query}` : path, headers, payload }
}

/**
 * Validators that judge requests the way Fastify does (its Ajv options, app.ts's custom
 * ones): a mutation that coercion or a default repairs is not malformed.
 */
export function requestJudge () {
  const ajv = new Ajv({ coerceTypes: 'array', useDefaults: true, removeAdditional: false, allErrors: false, strict: false })
  addFormats.default(ajv)
  type Check = (data: unknown) => boolean
  const cache = new Map<Operation, { body?: Check, params: Check, query: Check }>()
  const objectOf = (ps: Parameter[]) => ({
    type: 'object',
    properties: Object.fromEntries(ps.map(p => [p.name, p.schema])),
    required: ps.filter(p => p.required).map(p => p.name)
  })
  return (op: Operation, parts: Parts): boolean => {
    let v = cache.get(op)
    if (!v) {
      v = {
        params: ajv.compile(objectOf(op.params)),
        query: ajv.compile(objectOf(op.query)),
        ...op.body ? { body: ajv.compile(op.body) } : {}
      }
      cache.set(op, v)
    }
    // Validation coerces in place: what the handler would get is checked for numbers no JSON
    // Schema number can be, which Ajv's coercion lets through.
    const body = clone(parts.body)
    if (v.body && parts.rawBody === undefined && (!v.body(body) || hasNonFinite(body))) return false
    // Path parameters arrive decoded; the query as strings (arrays when repeated).
    const params = clone(parts.params)
    const query = clone(parts.query)
    return v.params(params) && v.query(query) && !hasNonFinite(params) && !hasNonFinite(query)
  }
}

function hasNonFinite (value: unknown): boolean {
  if (typeof value === 'number') return !Number.isFinite(value)
  if (value && typeof value === 'object') return Object.values(value).some(hasNonFinite)
  return false
}

/** The RFC 9457 shape of docs/errors.md, down to each code's fixed status, type and title. */
export const problemSchema: Schema = {
  type: 'object',
  additionalProperties: false,
  required: ['type', 'title', 'status', 'code', 'detail', 'requestId'],
  properties: {
    type: { type: 'string' },
    title: { type: 'string' },
    status: { type: 'integer' },
    code: { enum: Object.keys(errorCatalog) },
    detail: { type: 'string' },
    requestId: { type: 'string', minLength: 1 },
    errors: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['field', 'message'],
        properties: { field: { type: 'string', pattern: '^(body|querystring|params|headers)(\\.|$)' }, message: { type: 'string' } }
      }
    }
  }
}

export interface Reply { statusCode: number, headers: Record<string, unknown>, body: string }

/**
 * Judges one response by the document: a documented status must match its schema (JSON
 * Schema 2020-12, as OpenAPI 3.1 says), any other 4xx must be a registry problem, and nothing
 * else may come back. Returns what is wrong, empty when nothing is.
 */
export function responseJudge () {
  const ajv = new Ajv2020({ strict: false, allErrors: true })
  addFormats.default(ajv)
  const problem = ajv.compile(problemSchema)
  const compiled = new Map<Schema, ReturnType<Ajv2020['compile']>>()
  const validatorFor = (schema: Schema) => {
    let v = compiled.get(schema)
    if (!v) compiled.set(schema, v = ajv.compile(schema))
    return v
  }
  return (op: Operation, res: Reply): string[] => {
    const type = String(res.headers['content-type'] ?? '')
    if (res.statusCode >= 500 && !op.responses.has(res.statusCode)) return [`server error ${res.statusCode}: ${res.body.slice(0, 300)}`]
    if (op.responses.has(res.statusCode)) {
      const documented = op.responses.get(res.statusCode)
      if (!documented) return res.body.length === 0 ? [] : [`${res.statusCode} documents no content, got ${res.body.length} bytes`]
      if (!type.startsWith(documented.mediaType)) return [`${res.statusCode} documents ${documented.mediaType}, got ${type}`]
      let body: unknown = res.body
      if (documented.mediaType === 'application/json') {
        try { body = JSON.parse(res.body) } catch { return [`${res.statusCode} is not JSON: ${res.body.slice(0, 200)}`] }
      }
      const validate = validatorFor(documented.schema)
      return validate(body) ? [] : [`${res.statusCode} violates its schema: ${ajv.errorsText(validate.errors)}`]
    }
    if (res.statusCode < 400 || res.statusCode >= 500) return [`undocumented status ${res.statusCode}`]

    const wrong: string[] = []
    if (!/^application\/problem\+json/.test(type)) wrong.push(`${res.statusCode} with content-type ${type}, not problem+json`)
    let body: Record<string, any>
    try { body = JSON.parse(res.body) } catch { return [...wrong, `${res.statusCode} body is not JSON: ${res.body.slice(0, 200)}`] }
    if (!problem(structuredClone(body))) return [...wrong, `${res.statusCode} problem shape: ${ajv.errorsText(problem.errors)}`]
    const entry = errorCatalog[body.code as ErrorCode]
    if (body.status !== res.statusCode) wrong.push(`problem status ${body.status} on a ${res.statusCode}`)
    if (entry.status !== res.statusCode) wrong.push(`${body.code} is ${entry.status} in the registry, sent as ${res.statusCode}`)
    if (body.type !== problemType(body.code)) wrong.push(`type ${body.type} for ${body.code}`)
    if (body.title !== entry.title) wrong.push(`title ${body.title} for ${body.code}`)
    if (body.requestId !== res.headers['x-request-id']) wrong.push('requestId differs from X-Request-Id')
    if ((body.code === 'VALIDATION_FAILED') !== Array.isArray(body.errors)) {
      wrong.push(`errors present on ${body.code} or missing on VALIDATION_FAILED`)
    }
    if (/\bat .+\.[jt]s:\d+|SELECT |INSERT |UPDATE |DELETE FROM/.test(body.detail)) {
      wrong.push(`stack or SQL in detail: ${body.detail.slice(0, 200)}`)
    }
    if (res.statusCode === 429 && !res.headers['retry-after']) wrong.push('429 without Retry-After')
    return wrong
  }
}
