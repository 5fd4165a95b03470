// Checks the README's nginx snippet for serving a mirror: two agents on 127.0.0.1 (an origin and a lab), a small
// tree published and synced to the lab's `--to` path, then Debian's nginx — master as root, workers as `nobody`,
// the README's `server { … }` block rendered onto a loopback port and the lab's mirror path — serves a file,
// compared byte for byte with the source; again after a second version (the symlink flip); and the directory
// listing (autoindex). Everything it starts is stopped and its temp dir removed; exits 1 on any mismatch.
//
// Installs nginx from Debian when missing (nginx-light, else nginx; scripts/setup-debian.sh). Needs root: nginx's
// `user` directive does, and the point is a reader that is not the agent's user.
// Run: npm run build && npm run serve-check [-- --keep]
import '../agent/polyfill.js'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { chmod, mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { basename, dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Cluster, cliOk, freePort, sleep, waitFor } from '../agent/demo/local-cluster.js'

const here = dirname(fileURLToPath(import.meta.url))
const REPO = basename(dirname(here)) === 'dist' ? resolve(here, '..', '..') : resolve(here, '..')
const TREE = 'rhel-10/compose/BaseOS'
/** The paths the README's snippet names, replaced by this run's. */
const SNIPPET_MIRROR = '/srv/mirror/BaseOS'
const SNIPPET_LISTEN = 'listen 80;'
const NOBODY = 65534

function log (line: string): void { process.stdout.write(`serve-check: ${line}\n`) }

function run (cmd: string, args: string[]): { status: number | null, stdout: string, stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8' })
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? (r.error?.message ?? '') }
}

function findNginx (): string | undefined {
  for (const candidate of ['/usr/sbin/nginx', '/usr/local/sbin/nginx']) if (existsSync(candidate)) return candidate
  const which = run('sh', ['-c', 'command -v nginx'])
  return which.status === 0 && which.stdout.trim() !== '' ? which.stdout.trim() : undefined
}

/** Candidate versions of the packages in the current lists ('(none)' → absent). */
function candidates (packages: string[]): Map<string, string> {
  const out = new Map<string, string>()
  let current = ''
  for (const line of run('apt-cache', ['policy', ...packages]).stdout.split('\n')) {
    const pkg = /^(\S+):$/.exec(line)
    if (pkg !== null) current = pkg[1] as string
    const cand = /^\s+Candidate:\s+(\S+)/.exec(line)
    if (cand !== null && cand[1] !== '(none)') out.set(current, cand[1] as string)
  }
  return out
}

/** nginx from Debian: nginx-light where the distribution still has it (bookworm), else nginx. */
function ensureNginx (): string {
  const found = findNginx()
  if (found !== undefined) return found
  if (run('sh', ['-c', 'command -v apt-get']).status !== 0) throw new Error('nginx is not installed and apt-get is not here (not Debian?): install nginx yourself')
  let known = candidates(['nginx-light', 'nginx'])
  if (known.size === 0) {
    log('apt-get update (no nginx in the package lists)')
    const update = spawnSync('apt-get', ['update'], { stdio: 'inherit' })
    if (update.status !== 0) throw new Error('apt-get update failed')
    known = candidates(['nginx-light', 'nginx'])
  }
  const pkg = known.has('nginx-light') ? 'nginx-light' : 'nginx'
  log(`installing ${pkg} ${known.get(pkg) ?? ''}`)
  const r = spawnSync('sh', [join(REPO, 'scripts', 'setup-debian.sh'), pkg], { stdio: 'inherit' })
  const installed = findNginx()
  if (r.status !== 0 || installed === undefined) throw new Error(`could not install ${pkg}: run scripts/setup-debian.sh ${pkg} as root`)
  return installed
}

/** The first ```nginx block of the README's "Serving a mirror" section, onto `port` and `mirror`. */
export function renderSnippet (readme: string, port: number, mirror: string): string {
  const section = readme.slice(readme.indexOf('## Serving a mirror'))
  const block = /```nginx\n([\s\S]*?)```/.exec(section)?.[1]
  if (block === undefined) throw new Error('README.md has no ```nginx block under "## Serving a mirror"')
  if (!block.includes(SNIPPET_LISTEN) || !block.includes(SNIPPET_MIRROR)) throw new Error(`the README's nginx snippet no longer has "${SNIPPET_LISTEN}" and "${SNIPPET_MIRROR}": update scripts/serve-check.ts`)
  return block.replace(SNIPPET_LISTEN, `listen 127.0.0.1:${port};`).replaceAll(SNIPPET_MIRROR, mirror)
}

function nginxConf (dir: string, server: string): string {
  const group = run('getent', ['group', 'nogroup']).status === 0 ? 'nogroup' : 'nobody'
  return `# written by scripts/serve-check.ts: master as root, workers as nobody
user nobody ${group};
worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 64; }
http {
    access_log off;
    default_type application/octet-stream;
    client_body_temp_path ${dir}/client_body;
${server.split('\n').map(l => l === '' ? l : `    ${l}`).join('\n')}
}
`
}

/** Uids of the processes whose parent is `pid` (nginx's workers). */
async function childUids (pid: number): Promise<number[]> {
  const out: number[] = []
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const status = await readFile(`/proc/${name}/status`, 'utf8').catch(() => '')
    if (new RegExp(`^PPid:\\s+${pid}$`, 'm').test(status)) out.push(Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]))
  }
  return out
}

async function fetchBytes (url: string): Promise<Buffer> {
  const res = await fetch(url, { signal: AbortSignal.timeout(10_000) })
  if (res.status !== 200) throw new Error(`GET ${url}: HTTP ${res.status} ${(await res.text()).slice(0, 300)}`)
  return Buffer.from(await res.arrayBuffer())
}

async function stopNginx (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise<void>(resolveExit => child.once('exit', () => resolveExit()))
  child.kill('SIGQUIT') // graceful: the master stops its workers
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000)
  await exited
  clearTimeout(timer)
}

async function main (): Promise<void> {
  const keep = process.argv.includes('--keep')
  if (process.getuid?.() !== 0) throw new Error('run as root: nginx switches its workers to nobody only when its master is root')
  const nginxBin = ensureNginx()
  log(`${run(nginxBin, ['-v']).stderr.trim()} at ${nginxBin}`)

  const cluster = await Cluster.create('deltamesh-serve-check-')
  let nginx: ChildProcess | undefined
  let nginxLog = ''
  let failed = false
  try {
    // mkdtemp made it 0700: the workers (nobody) must traverse it down to the agent's home and the mirror
    await chmod(cluster.dir, 0o755)
    const source = join(cluster.dir, 'source')
    const rpm = join(source, 'Packages', 'x86_64', 'bash-5.2.rpm')
    await mkdir(dirname(rpm), { recursive: true })
    await writeFile(join(source, 'README'), 'served by nginx from a deltamesh mirror\n')
    await writeFile(rpm, randomBytes(400 * 1024))
    const origin = await cluster.addSite('origin')
    const lab = await cluster.addSite('lab')
    await cluster.wire(TREE, origin)
    await cluster.start(origin)
    await cluster.start(lab)
    const mirror = join(cluster.dir, 'mirror', 'BaseOS')
    await cliOk(['subscribe', '--home', lab.home, TREE, '--to', mirror])
    const publishAndSync = async (label: string): Promise<void> => {
      const { seq } = JSON.parse(await cliOk(['publish', '--home', origin.home, TREE, source, '--label', label, '--json'])) as { seq: number }
      await cliOk(['sync', '--home', lab.home, TREE, '--seq', String(seq), '--timeout', '120'], { timeoutMs: 130_000 })
      log(`${label}: lab synced seq ${seq} at ${mirror}`)
    }
    await publishAndSync('v1')

    const port = await freePort()
    const nginxDir = join(cluster.dir, 'nginx')
    await mkdir(nginxDir, { mode: 0o700 })
    const server = renderSnippet(await readFile(join(REPO, 'README.md'), 'utf8'), port, mirror)
    await writeFile(join(nginxDir, 'nginx.conf'), nginxConf(nginxDir, server))
    const test = run(nginxBin, ['-t', '-c', join(nginxDir, 'nginx.conf'), '-p', nginxDir, '-e', join(nginxDir, 'error.log')])
    if (test.status !== 0) throw new Error(`nginx -t refused the rendered config:\n${test.stderr}`)
    const child = spawn(nginxBin, ['-c', join(nginxDir, 'nginx.conf'), '-p', nginxDir, '-e', join(nginxDir, 'error.log')], { stdio: ['ignore', 'pipe', 'pipe'] })
    nginx = child
    child.stdout?.on('data', (d: Buffer) => { nginxLog += d.toString() })
    child.stderr?.on('data', (d: Buffer) => { nginxLog += d.toString() })
    const base = `http://127.0.0.1:${port}/BaseOS/`
    await waitFor('nginx to answer', async () => {
      if (child.exitCode !== null) throw new Error(`nginx exited ${child.exitCode}: ${nginxLog}`)
      return await fetch(base, { signal: AbortSignal.timeout(2_000) }).then(() => true, () => false)
    }, 15_000, 100)
    const workers = await childUids(child.pid as number)
    log(`nginx on 127.0.0.1:${port}, workers' uids: ${workers.join(', ')}`)
    if (workers.length === 0 || workers.some(uid => uid !== NOBODY)) throw new Error(`nginx workers are not all nobody (${NOBODY}): ${workers.join(', ')}`)

    const check = async (what: string): Promise<void> => {
      const want = await readFile(rpm)
      const got = await fetchBytes(`${base}Packages/x86_64/bash-5.2.rpm`)
      if (!got.equals(want)) throw new Error(`${what}: nginx served ${got.length} bytes that differ from the source's ${want.length}`)
      log(`${what}: GET /BaseOS/Packages/x86_64/bash-5.2.rpm → ${got.length} bytes, identical to the source`)
    }
    await check('v1')
    const listing = (await fetchBytes(`${base}Packages/x86_64/`)).toString()
    if (!listing.includes('bash-5.2.rpm')) throw new Error(`autoindex listing lacks bash-5.2.rpm:\n${listing.slice(0, 500)}`)
    log('autoindex: /BaseOS/Packages/x86_64/ lists bash-5.2.rpm')

    // a new version: the --to symlink flips, and nginx serves the new bytes
    await writeFile(rpm, Buffer.concat([await readFile(rpm), randomBytes(50 * 1024)]))
    await publishAndSync('v2')
    await sleep(100)
    await check('v2 (after the flip)')
    log('PASS')
  } catch (err) {
    failed = true
    process.stderr.write(`serve-check: FAIL: ${err instanceof Error ? err.message : String(err)}\n`)
    const errorLog = await readFile(join(cluster.dir, 'nginx', 'error.log'), 'utf8').catch(() => '')
    if (errorLog !== '' || nginxLog !== '') process.stderr.write(`--- nginx ---\n${nginxLog}${errorLog.slice(-4000)}\n`)
    for (const s of cluster.sites) process.stderr.write(`--- ${s.name} log ---\n${s.log.slice(-4000)}\n`)
  } finally {
    if (nginx !== undefined) await stopNginx(nginx)
    await cluster.cleanup({ keepFiles: keep })
    if (keep) log(`kept ${cluster.dir}`)
  }
  if (failed) process.exitCode = 1
}

main().catch((err: unknown) => {
  process.stderr.write(`serve-check: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
  process.exitCode = 1
})
