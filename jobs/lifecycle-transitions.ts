import type { JobDefinition } from './index.js'

/** Trials that ended, grace periods that ran out, contracts past their end (services/tenant-admin.ts). */
export const lifecycleTransitionsJob: JobDefinition = {
  name: 'lifecycle-transitions',
  interval: 'JOB_LIFECYCLE_INTERVAL_S',
  run: ({ services }, signal) => services.tenantAdmin.applyDueTransitions(signal)
}
