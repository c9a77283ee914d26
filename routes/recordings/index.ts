import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { AppError } from '../../errors.js'
import { InvalidCursorError, prepareBatch, type BudgetOutcome } from '../../services/recordings.js'
import { DateTime, PageLimit, strict, Uuid } from '../schemas.js'

// Client-chosen, and part of a URL path: the same rule as the column's CHECK.
const RecordingId = Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$', description: '1-128 of A-Z a-z 0-9 . _ : -' })
const Page = {
  limit: PageLimit(500, 100),
  cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 256, description: 'nextCursor of the previous page' }))
}
const NextCursor = Type.Union([Type.String(), Type.Null()])
const Event = Type.Object({
  id: Uuid,
  recordingId: RecordingId,
  type: Type.String({ minLength: 1, maxLength: 100 }),
  occurredAt: DateTime,
  payload: Type.Unknown()
})

function invalidCursor (err: unknown): never {
  if (err instanceof InvalidCursorError) {
    throw new AppError('VALIDATION_FAILED', `querystring.cursor ${err.message}`, {
      errors: [{ field: 'querystring.cursor', message: err.message }]
    })
  }
  throw err
}

/** Recording mode (docs/recording.md; the recorder script is routes/recorder). */
const recordings: FastifyPluginAsyncTypebox = async (fastify) => {
  const { config, entitlements } = fastify
  const { recordings: service, eventBudget: budget } = fastify.services

  fastify.post('/api/v1/recordings/events', {
    bodyLimit: config.RECORDING_MAX_BATCH_BYTES,
    // Not counted against api_requests_per_minute: recording traffic comes from the tenant's
    // end users' browsers, in numbers the tenant does not control, and must not starve the
    // tenant's own API calls. recording_events_per_minute bounds it instead, and as every
    // request carries at least one event, it bounds the requests too. The per-IP limit stays.
    config: { tenantRateLimit: false },
    // Before validation: a tenant without the feature hears so whatever its body holds, and
    // no schema work is spent on it.
    preValidation: fastify.requireFeature('recording_mode'),
    schema: {
      tags: ['recordings'],
      operationId: 'recordEvents',
      summary: 'Record a batch of events',
      body: Type.Object({
        events: Type.Array(Type.Object({
          id: Uuid,
          recordingId: RecordingId,
          type: Type.String({ minLength: 1, maxLength: 100 }),
          occurredAt: Type.String({ format: 'date-time' }),
          payload: Type.Unsafe<Record<string, unknown>>({
            type: 'object',
            // Any members: without this a generated client types the payload as an empty object.
            additionalProperties: true,
            description: `any JSON object, at most RECORDING_MAX_PAYLOAD_BYTES (${config.RECORDING_MAX_PAYLOAD_BYTES}) bytes as JSON`
          })
        }, strict), { minItems: 1, maxItems: config.RECORDING_MAX_BATCH_EVENTS })
      }, strict),
      response: { 202: Type.Object({ accepted: Type.Integer(), duplicates: Type.Integer() }) }
    }
  }, async (request, reply) => {
    const tenantId = request.tenant!.id
    const { events } = request.body
    const batch = prepareBatch(events, { maxPayloadBytes: config.RECORDING_MAX_PAYLOAD_BYTES })
    if (!batch.ok) {
      const errors = batch.problems.map(p => ({ field: `body.events.${p.index}.${p.field}`, message: p.message }))
      throw new AppError('VALIDATION_FAILED', `${errors[0]!.field} ${errors[0]!.message}`, { errors })
    }

    // Limit 0 is "no recording at all": a 403 the recorder stops on, not a 429 it would retry
    // forever. null is unlimited.
    const decision = await entitlements.check(tenantId, 'recording_events_per_minute', request.withTenant)
    if (!decision.allowed) throw new AppError('ENTITLEMENT_DENIED', `recording_events_per_minute: ${decision.reason}`)
    const limit = decision.limit
    let admitted: Extract<BudgetOutcome, { ok: true }> | undefined
    if (limit !== null) {
      const outcome = budget.take(tenantId, events.length, limit)
      const windows = request.rateLimitWindows ?? (request.rateLimitWindows = [])
      windows.push({ policy: 'recording-events', limit, remaining: outcome.remaining, resetS: outcome.resetS, windowS: budget.windowS })
      if (!outcome.ok && outcome.tooLarge) {
        throw new AppError('PAYLOAD_TOO_LARGE',
          `a batch of ${events.length} events exceeds this tenant's limit of ${limit} recording events per minute; send smaller batches`)
      }
      if (!outcome.ok) {
        throw new AppError('RATE_LIMITED',
          `the limit of ${limit} recording events per minute is spent ` +
            `(${outcome.remaining} left, this batch has ${events.length}); retry in ${outcome.resetS} s`,
          { headers: { 'retry-after': String(outcome.resetS) } })
      }
      admitted = outcome
    }

    let result
    try {
      result = await service.store(tenantId, batch)
    } catch (err) {
      admitted?.giveBack(events.length) // nothing was stored
      throw err
    }
    // The budget counts stored events: a retried batch costs only what it newly stored.
    admitted?.giveBack(result.duplicates)
    return reply.code(202).send(result)
  })

  // Reads are not gated by recording_mode: a tenant that lost the feature (a downgrade, a
  // suspension) still reads what it recorded until retention purges it.
  fastify.get('/api/v1/recordings', {
    schema: {
      tags: ['recordings'],
      operationId: 'listRecordings',
      summary: 'List recordings',
      querystring: Type.Object(Page, strict),
      response: {
        200: Type.Object({
          recordings: Type.Array(Type.Object({ recordingId: RecordingId, events: Type.Integer(), firstAt: DateTime, lastAt: DateTime })),
          nextCursor: NextCursor
        })
      }
    }
  }, async (request) => service.list(request.tenant!.id, request.query, request.withTenant).catch(invalidCursor))

  fastify.get('/api/v1/recordings/:recordingId/events', {
    schema: {
      tags: ['recordings'],
      operationId: 'listRecordingEvents',
      summary: 'List a recording\'s events',
      params: Type.Object({ recordingId: RecordingId }),
      querystring: Type.Object(Page, strict),
      response: { 200: Type.Object({ events: Type.Array(Event), nextCursor: NextCursor }) }
    }
  }, async (request) => {
    const page = await service.events(request.tenant!.id, request.params.recordingId, request.query, request.withTenant)
      .catch(invalidCursor)
    if (!page) throw new AppError('NOT_FOUND', `recording ${request.params.recordingId} not found`)
    return page
  })
}

export default recordings
