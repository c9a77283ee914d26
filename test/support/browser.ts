import { existsSync } from 'node:fs'
import { chromium, type Browser } from 'playwright-core'

/** Debian's chromium package; .ci/run installs it. Playwright's own browser downloads are not used. */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

const ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-quic'
]

/**
 * Why the browser tests cannot run here, or null when they can. Without Chromium they skip
 * (npm test passes on a developer's machine without it), except in CI, where they must run:
 * there the caller fails instead of skipping.
 */
export function chromiumMissing (): string | null {
  return existsSync(CHROMIUM) ? null : `${CHROMIUM} not found (apt-get install chromium)`
}

/** Headless Chromium with a fresh profile (chromium.launch makes a temporary user-data-dir). */
export function launchChromium (): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS })
}
