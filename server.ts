import closeWithGrace from 'close-with-grace'
import { buildApp, gracefulClose } from './app.js'
import { createLogger } from './infra/logger.js'
import { ConfigError, loadConfig, type Config } from './config.js'
import { embeddedCredentials, startEmbeddedPostgres, type EmbeddedServer } from './db/embedded.js'
import { provisionDatabase } from './db/provision.js'

/**
 * Process entry: config → database (embedded when DATABASE_URL is unset) → app (which
 * migrates and checks readiness) → listen → graceful shutdown on SIGTERM/SIGINT.
 */
async function main () {
  let config: Config
  try {
    config = loadConfig(process.env)
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    process.stderr.write(`${err.message}\n`)
    process.exit(1)
  }
  const log = createLogger(config)

  let embedded: EmbeddedServer | undefined
  if (!config.DATABASE_URL) {
    embedded = await startEmbeddedPostgres({ dataDir: config.DATA_DIR, port: config.EMBEDDED_PG_PORT, log })
    const creds = await embeddedCredentials(config.DATA_DIR)
    const urls = await provisionDatabase({
      adminUrl: embedded.adminUrl, database: 'govula', ownerPassword: creds.owner, appPassword: creds.app
    })
    config = loadConfig(process.env, { DATABASE_URL: urls.runtimeUrl, MIGRATION_DATABASE_URL: urls.ownerUrl })
    log.info({ port: config.EMBEDDED_PG_PORT, dataDir: config.DATA_DIR }, 'embedded postgres running')
  }

  const app = await buildApp(config, { logger: log })

  closeWithGrace({ delay: config.SHUTDOWN_TIMEOUT_MS, logger: log }, async ({ signal, err }) => {
    if (err) log.error({ err }, 'fatal error, shutting down')
    else log.info({ signal }, 'shutting down')
    await gracefulClose(app, config.SHUTDOWN_DRAIN_DELAY_MS)
    if (embedded) {
      await embedded.stop()
      log.info({ closed: 'embedded-postgres' }, 'embedded postgres stopped')
    }
  })

  try {
    await app.listen({ port: config.PORT, host: config.HOST })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      // One line that says what to do; the shutdown that follows has nothing to add (a readiness
      // round cut short by it would only log failures that are not the cause).
      process.stderr.write(`port ${config.PORT} on ${config.HOST} is in use: stop what holds it, or set PORT to another port\n`)
      log.level = 'silent'
    } else {
      log.error({ err }, 'could not listen')
    }
    await app.close()
    await embedded?.stop()
    process.exit(1)
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`failed to start: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exit(1)
})
