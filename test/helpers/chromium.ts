import { spawn } from 'node:child_process'
import { access } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'

// The browser test drives Debian's chromium with playwright-core (npm's own browser download cannot work on
// a closed network). When it is missing, the project's own setup script installs it, so `npm test` on a
// fresh CI machine needs nothing done by hand.

export const CHROMIUM = '/usr/bin/chromium'
const SETUP = fileURLToPath(new URL('../../scripts/setup-debian.sh', import.meta.url))

/** Flags for a headless chromium in a container with no network: no sandbox (root), no background fetches. */
export const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage']

async function exists (path: string): Promise<boolean> {
  return await access(path).then(() => true, () => false)
}

export async function ensureChromium (): Promise<string> {
  if (await exists(CHROMIUM)) return CHROMIUM
  const output: string[] = []
  const code = await new Promise<number | null>((resolve, reject) => {
    const child = spawn('sh', [SETUP, 'chromium'], { stdio: ['ignore', 'pipe', 'pipe'] })
    child.stdout.on('data', (d: Buffer) => output.push(d.toString()))
    child.stderr.on('data', (d: Buffer) => output.push(d.toString()))
    child.on('error', reject)
    child.on('close', resolve)
  })
  if (code !== 0 || !(await exists(CHROMIUM))) throw new Error(`could not install chromium with ${SETUP} (exit ${code}):\n${output.join('').slice(-4000)}`)
  return CHROMIUM
}
