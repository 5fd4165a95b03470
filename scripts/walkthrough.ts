// `npm run walkthrough`: runs the README's walkthrough — exactly the shell lines between its
// `<!-- walkthrough:begin -->` and `<!-- walkthrough:end -->` markers, read from README.md at run time, so the
// walkthrough cannot drift from the code — with bash, stopping at the first command that fails. Ports: a free
// block on 127.0.0.1 (PORT_BASE); the walkthrough makes its own temp dir and removes it at its end; if a
// command fails, the agents it started are stopped (their agent.pid files) and the temp dir removed all the same.
// Exits with bash's status. Run from anywhere: npm run build && npm run walkthrough
import { spawn } from 'node:child_process'
import { access, readFile } from 'node:fs/promises'
import { constants } from 'node:fs'
import { createServer } from 'node:net'
import { basename, dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
export const REPO = basename(dirname(here)) === 'dist' ? resolve(here, '..', '..') : resolve(here, '..')
const BEGIN = '<!-- walkthrough:begin -->'
const END = '<!-- walkthrough:end -->'
/** The walkthrough uses PORT_BASE + 1..3 (libp2p) and + 11..13 (dashboards). */
const PORT_OFFSETS = [1, 2, 3, 11, 12, 13]

/** The shell lines of the README's walkthrough: every ```sh block between the markers, in order. */
export function extractWalkthrough (readme: string): string {
  const start = readme.indexOf(BEGIN)
  const end = readme.indexOf(END)
  if (start < 0 || end < start) throw new Error(`README.md: no ${BEGIN} … ${END} section`)
  const blocks = [...readme.slice(start, end).matchAll(/```sh\n([\s\S]*?)```/g)].map(m => m[1] as string)
  if (blocks.length === 0) throw new Error('README.md: no ```sh block in the walkthrough section')
  return blocks.join('\n')
}

async function portFree (port: number): Promise<boolean> {
  return await new Promise(resolvePort => {
    const server = createServer()
    server.once('error', () => resolvePort(false))
    server.listen(port, '127.0.0.1', () => server.close(() => resolvePort(true)))
  })
}

/** A base whose walkthrough ports are all free now. */
async function freeBase (): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 40_000)
    if ((await Promise.all(PORT_OFFSETS.map(async o => await portFree(base + o)))).every(Boolean)) return base
  }
  throw new Error('no free block of ports on 127.0.0.1')
}

/**
 * The script bash runs: strict mode, each command echoed (`+ …`), and a trap that stops the agents and removes
 * the walkthrough's temp dir ($W) however the run ends (the walkthrough's own last lines do it on success).
 */
export function runnable (walkthrough: string): string {
  return [
    'set -euo pipefail',
    'cleanup () { if [ -n "${W:-}" ] && [ -d "$W" ]; then for f in "$W"/*/agent.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done; wait || true; rm -rf "$W"; fi; }',
    'trap cleanup EXIT',
    'set -x',
    walkthrough,
  ].join('\n')
}

/** Debian tools the walkthrough's lines use: installed by the project's setup script when missing. */
const TOOLS = ['jq', 'curl']

async function onPath (binary: string): Promise<boolean> {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(':')) {
    if (await access(resolve(dir, binary), constants.X_OK).then(() => true, () => false)) return true
  }
  return false
}

async function ensureTools (): Promise<void> {
  const missing: string[] = []
  for (const t of TOOLS) if (!(await onPath(t))) missing.push(t)
  if (missing.length === 0) return
  const code = await new Promise<number | null>((resolveSetup, reject) => {
    const child = spawn('sh', [resolve(REPO, 'scripts', 'setup-debian.sh'), ...missing], { stdio: ['ignore', 'inherit', 'inherit'] })
    child.on('error', reject)
    child.on('close', resolveSetup)
  })
  if (code !== 0) throw new Error(`the walkthrough needs ${missing.join(' and ')}: scripts/setup-debian.sh ${missing.join(' ')} failed (exit ${code})`)
}

export async function runWalkthrough (options: { stdio?: 'inherit' | 'pipe' } = {}): Promise<{ code: number | null, output: string }> {
  await ensureTools()
  const script = runnable(extractWalkthrough(await readFile(resolve(REPO, 'README.md'), 'utf8')))
  const env = { ...process.env, PORT_BASE: String(await freeBase()), DELTAMESH_LOG_LEVEL: process.env.DELTAMESH_LOG_LEVEL ?? 'info' }
  return await new Promise((resolveRun, reject) => {
    const child = spawn('bash', ['-c', script], { cwd: REPO, env, stdio: ['ignore', options.stdio ?? 'inherit', options.stdio ?? 'inherit'] })
    let output = ''
    child.stdout?.on('data', (d: Buffer) => { output += d.toString() })
    child.stderr?.on('data', (d: Buffer) => { output += d.toString() })
    child.on('error', reject)
    child.on('close', code => resolveRun({ code, output }))
  })
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const started = Date.now()
  const { code } = await runWalkthrough()
  process.stdout.write(`walkthrough: ${code === 0 ? 'PASS' : `FAILED (exit ${code})`} in ${((Date.now() - started) / 1000).toFixed(1)} s\n`)
  process.exitCode = code ?? 1
}
