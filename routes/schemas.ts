import { Type } from '@sinclair/typebox'

// Schemas shared by several route folders.
export const Uuid = Type.String({ format: 'uuid' })
export const Role = Type.Union([Type.Literal('owner'), Type.Literal('admin'), Type.Literal('member')])
/** A timestamp: services hand over Date objects, the serializer writes ISO 8601. */
export const DateTime = Type.Unsafe<Date | string>({ type: 'string', format: 'date-time' })
export const NoContent = Type.Null({ description: 'No Content' })
/** Request bodies refuse unknown fields (a typo must not pass silently). */
export const strict = { additionalProperties: false } as const
