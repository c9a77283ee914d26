// The members response, as the service's route declares it (fast serialisation in Fastify).
export const membersResponse = {
  type: 'object',
  properties: {
    members: {
      type: 'array',
      items: {
        type: 'object',
        properties: { userId: { type: 'string' }, email: { type: 'string' }, role: { type: 'string' } },
        required: ['userId', 'email', 'role']
      }
    }
  },
  required: ['members']
} as const

export const badRequest = { type: 'object', properties: { error: { type: 'string' } } } as const
