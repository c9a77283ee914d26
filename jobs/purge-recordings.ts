import { purgeExpiredRecordings } from '../services/recordings.js'
import type { JobDefinition } from './index.js'

/** Each tenant's recording events past its recording_retention_days (services/recordings.ts). */
export const purgeRecordingsJob: JobDefinition = {
  name: 'purge-recordings',
  interval: 'JOB_PURGE_RECORDINGS_INTERVAL_S',
  run: ({ db, log, services }, signal) => purgeExpiredRecordings({ db, log, entitlements: services.entitlements }, signal)
}
