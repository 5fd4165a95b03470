import { spawn } from 'node:child_process'
import { access } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'

// Tools a test compares against (rsync judges a mirror's fidelity) come from Debian, installed by the project's
// own setup script when missing, so `npm test` on a fresh machine needs nothing done by hand.

const SETUP = fileURLToPath(new URL('../../scripts/setup-debian.sh', import.meta.url))

/** The path of `binary` (e.g. /usr/bin/rsync), installing Debian's `pkg` first when it is not there. */
export async function ensureDebianTool (binary: string, pkg: string): Promise<string> {
  if (await access(binary).then(() => true, () => false)) return binary
  const output: string[] = []
  const code = await new Promise<number | null>((resolve, reject) => {
    const child = spawn('sh', [SETUP, pkg], { stdio: ['ignore', 'pipe', 'pipe'] })
    child.stdout.on('data', (d: Buffer) => output.push(d.toString()))
    child.stderr.on('data', (d: Buffer) => output.push(d.toString()))
    child.on('error', reject)
    child.on('close', resolve)
  })
  if (code !== 0 || !(await access(binary).then(() => true, () => false))) throw new Error(`could not install ${pkg} with ${SETUP} (exit ${code}):\n${output.join('').slice(-4000)}`)
  return binary
}
