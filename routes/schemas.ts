import type { FastifyRequest, RouteOptions } from 'fastify'
import { Type } from '@sinclair/typebox'
import { AppError } from '../errors.js'

// Schemas shared by several route folders, and the one validation Ajv cannot do for them.
export const Uuid = Type.String({ format: 'uuid' })
export const Role = Type.Union([Type.Literal('owner'), Type.Literal('admin'), Type.Literal('member')])
/** A timestamp: services hand over Date objects, the serializer writes ISO 8601. */
export const DateTime = Type.Unsafe<Date | string>({ type: 'string', format: 'date-time' })
export const NoContent = Type.Null({ description: 'No Content' })
/**
 * A page size: optional in the document (clients may leave it out), and set by the time a
 * handler runs, because Ajv fills in the default (useDefaults). Typed as the number it then is.
 */
export const PageLimit = (max: number, def: number) =>
  Type.Unsafe<number>(Type.Optional(Type.Integer({ minimum: 1, maximum: max, default: def })))
/** Request bodies refuse unknown fields (a typo must not pass silently). */
export const strict = { additionalProperties: false } as const
/** For free text that reaches a Postgres text parameter: Postgres refuses NUL there (a 500 otherwise). */
export const NoNul = '^[^\\u0000]*$'

// Ajv's coercion turns the strings "Infinity" and "1e400" into Infinity, which then passes
// `integer` and skips minimum and maximum (ajv-validator/ajv#2212, fastify/fastify#6718):
// ?limit=1e400 reached Postgres as 'Infinity' and answered 500. Routes whose schema has a
// number refuse a non-finite one after validation; the others pay nothing.
type JsonSchema = { type?: unknown, properties?: Record<string, JsonSchema>, items?: JsonSchema }
const PARTS = [['querystring', 'query'], ['params', 'params'], ['body', 'body']] as const

function hasNumber (schema: JsonSchema | undefined): boolean {
  if (!schema || typeof schema !== 'object') return false
  const types = Array.isArray(schema.type) ? schema.type : [schema.type]
  return types.includes('integer') || types.includes('number') ||
    Object.values(schema.properties ?? {}).some(hasNumber) || hasNumber(schema.items)
}

/** The path of the first non-finite number where `schema` expects a number, or null. */
function nonFinite (schema: JsonSchema | undefined, value: unknown, path: string): string | null {
  if (typeof value === 'number') return Number.isFinite(value) ? null : path
  if (!schema || !value || typeof value !== 'object') return null
  if (Array.isArray(value)) {
    for (const [i, v] of value.entries()) {
      const found = nonFinite(schema.items, v, `${path}.${i}`)
      if (found) return found
    }
    return null
  }
  for (const [key, s] of Object.entries(schema.properties ?? {})) {
    const found = nonFinite(s, (value as Record<string, unknown>)[key], `${path}.${key}`)
    if (found) return found
  }
  return null
}

/** An onRoute hook (app.ts): see above. */
export function refuseNonFiniteNumbers (route: RouteOptions) {
  const schema = route.schema as Record<string, JsonSchema | undefined> | undefined
  const parts = PARTS.filter(([part]) => hasNumber(schema?.[part]))
  if (parts.length === 0) return
  const check = async (request: FastifyRequest) => {
    for (const [part, key] of parts) {
      const field = nonFinite(schema![part], request[key], part)
      if (field) {
        throw new AppError('VALIDATION_FAILED', `${field} must be a finite number`, {
          errors: [{ field, message: 'must be a finite number' }]
        })
      }
    }
  }
  route.preHandler = [check, ...[route.preHandler ?? []].flat()]
}
