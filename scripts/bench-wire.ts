// Issue 17's wire bench: the first sync of one subscriber against our own floor and against rsync over ssh,
// in one run, on 127.0.0.1, every end a process of its own:
//   (a) floor: a bare libp2p stream between two processes whose nodes are built by the agent's createNode
//       (scripts/bench/wire-floor.ts), N MiB in 256 KiB send()s with drain backpressure;
//   (b) deltamesh: first sync of an incompressible file (and of the repo corpus of `npm run bench`) from a
//       publisher agent to a subscriber agent (scripts/bench/wire-deltamesh.ts);
//   (c) rsync -a over ssh to Debian's sshd started by the bench with throwaway keys (scripts/bench/rsync-ssh.ts);
//       -z as well for the repo corpus.
// MB/s and CPU ms per MB (utime+stime from /proc; MB = 10^6 bytes of payload) at each end, and the ratios
// against the issue's targets. Every destination is compared with its source (SHA-256); a difference fails.
// Run: npm run build && npm run bench:wire -- [--size MiB] [--floor-size MiB] [--no-repo] [--profile DIR] [--keep]
import '../agent/polyfill.js'
import { createHash, randomFillSync } from 'node:crypto'
import { createReadStream, existsSync } from 'node:fs'
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises'
import { loadavg, tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { isDeepStrictEqual } from 'node:util'
import { Cluster } from '../agent/demo/local-cluster.js'
import { describeTree } from '../agent/demo/tree-gen.js'
import { cacheDir } from './bench/corpus.js'
import { killStarted, waitForQuiet } from './bench/proc.js'
import { ensureSshTools, rsyncOverSsh, startSshd, type RsyncSshRun, type SshServer } from './bench/rsync-ssh.js'
import { removeTree } from './bench/scratch.js'
import { firstSync, FILE_TREE, REPO_TREE, startAgents, type SyncFigures } from './bench/wire-deltamesh.js'
import { runFloor, type FloorResult } from './bench/wire-floor.js'
import { wireReport, type WireFigures } from './bench/wire-report.js'

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
const MiB = 1024 * 1024

interface Options { sizeMiB: number, floorMiB?: number, sendKiB: number, repo?: boolean, profile?: string, keep: boolean, quietLoad?: number }

function parseArgs (argv: string[]): Options {
  const o: Options = { sizeMiB: 1024, sendKiB: 256, keep: false }
  for (let i = 0; i < argv.length; i++) {
    const value = (): string => { const v = argv[++i]; if (v === undefined) throw new Error(`${argv[i - 1]} needs a value`); return v }
    switch (argv[i]) {
      case '--size': o.sizeMiB = Number(value()); break
      case '--floor-size': o.floorMiB = Number(value()); break
      case '--send-size': o.sendKiB = Number(value()); break
      case '--no-repo': o.repo = false; break
      case '--repo': o.repo = true; break
      case '--profile': o.profile = resolve(value()); break
      case '--keep': o.keep = true; break
      case '--wait-load': o.quietLoad = Number(value()); break
      case '--help':
        console.log('options: --size MiB (the incompressible file, default 1024) --floor-size MiB (the bare stream, default --size) --send-size KiB (the floor\'s send()s, default 256) --no-repo (skip the repo corpus; default: on when `npm run bench` built it) --profile DIR (both agents under --cpu-prof into DIR) --keep (leave the temp dirs) --wait-load L (first wait, up to 10 min, for a 1-minute load average below L: the machine is shared)')
        process.exit(0)
        break
      default: throw new Error(`unknown option ${argv[i]}`)
    }
  }
  for (const [name, v] of [['--size', o.sizeMiB], ['--floor-size', o.floorMiB ?? 1], ['--send-size', o.sendKiB]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be a positive integer`)
  }
  return o
}

/** The repo corpus `npm run bench` cached (quick scale first, v1 before v2), if any. */
function findRepoCorpus (): string | undefined {
  for (const scale of ['quick', 'full'] as const) {
    for (const v of ['v1', 'v2']) {
      const dir = join(cacheDir(scale), `repo-${v}`)
      if (existsSync(`${dir}.done`)) return dir
    }
  }
  return undefined
}

/** `bytes` of random data into `path`, in 8 MiB writes; returns its SHA-256. */
async function writeIncompressible (path: string, bytes: number): Promise<string> {
  await mkdir(dirname(path), { recursive: true })
  const hash = createHash('sha256')
  const file = await open(path, 'w')
  try {
    const buf = Buffer.allocUnsafe(8 * MiB)
    for (let done = 0; done < bytes;) {
      const n = Math.min(buf.length, bytes - done)
      randomFillSync(buf, 0, n)
      hash.update(buf.subarray(0, n))
      await file.write(buf, 0, n)
      done += n
    }
  } finally {
    await file.close()
  }
  return hash.digest('hex')
}

async function sha256File (path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * MiB })) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

async function checkFile (what: string, path: string, want: string): Promise<void> {
  const got = await sha256File(path).catch((err: Error) => `(${err.message})`)
  if (got !== want) throw new Error(`${what}: ${path} has SHA-256 ${got}, the source ${want}`)
}

async function checkTree (what: string, dir: string, want: Record<string, string>): Promise<void> {
  const got = await describeTree(dir)
  if (isDeepStrictEqual(got, want)) return
  const differing = [...new Set([...Object.keys(got), ...Object.keys(want)])].filter(k => got[k] !== want[k])
  throw new Error(`${what}: ${dir} differs from the source in ${differing.length} entries, e.g. ${differing.slice(0, 5).join(', ')}`)
}

const load = (): string => loadavg().map(l => l.toFixed(2)).join(' ')

interface State { work: string, cluster?: Cluster, sshd?: SshServer, keep: boolean }

async function cleanup (s: State): Promise<void> {
  killStarted()
  await s.sshd?.stop().catch(() => {})
  await s.cluster?.cleanup({ keepFiles: s.keep }).catch(() => {})
  if (!s.keep) await removeTree(s.work).catch(() => {})
}

async function deltameshPhase (o: Options, s: State, file: { path: string, sha: string }, repo: { dir: string, tree: Record<string, string> } | undefined): Promise<{ file: SyncFigures, repo?: SyncFigures }> {
  if (o.profile !== undefined) await mkdir(o.profile, { recursive: true })
  s.cluster = await Cluster.create('deltamesh-bench-wire-')
  const agents = await startAgents(s.cluster, o.profile === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', o.profile])
  console.log(`deltamesh: first sync of ${(o.sizeMiB * MiB / 1e6).toFixed(0)} MB (publisher pid ${agents.pub.process?.pid as number}, subscriber ${agents.sub.process?.pid as number}; load ${load()})`)
  const fileMirror = join(s.cluster.dir, 'file-mirror')
  const fileFigures = await firstSync(agents, FILE_TREE, dirname(file.path), fileMirror, log)
  await checkFile('deltamesh', join(fileMirror, 'incompressible.bin'), file.sha)
  if (!o.keep) await rm(fileMirror, { recursive: true, force: true })
  let repoFigures: SyncFigures | undefined
  if (repo !== undefined) {
    console.log(`deltamesh: first sync of the repo corpus ${repo.dir} (load ${load()})`)
    const repoMirror = join(s.cluster.dir, 'repo-mirror')
    repoFigures = await firstSync(agents, REPO_TREE, repo.dir, repoMirror, log)
    await checkTree('deltamesh repo', repoMirror, repo.tree)
    if (!o.keep) await removeTree(repoMirror)
  }
  // SIGTERM: a clean exit, so that --cpu-prof writes its profiles; the agents then use no CPU during rsync
  for (const site of [agents.sub, agents.pub]) await s.cluster.stop(site, 'SIGTERM')
  return { file: fileFigures, repo: repoFigures }
}

async function rsyncPhase (o: Options, s: State, file: { path: string, sha: string }, repo: { dir: string, tree: Record<string, string> } | undefined): Promise<{ file: RsyncSshRun, repo?: RsyncSshRun, repoZ?: RsyncSshRun }> {
  s.sshd = await startSshd(await mkdtemp(join(s.work, 'ssh-')))
  console.log(`rsync over ssh: ${s.sshd.version} on 127.0.0.1:${s.sshd.port}, cipher ${s.sshd.cipher} (load ${load()})`)
  const fileDest = join(s.work, 'rsync-file')
  const fileRun = await rsyncOverSsh(s.sshd, file.path, fileDest, [])
  await checkFile('rsync over ssh', join(fileDest, 'incompressible.bin'), file.sha)
  if (!o.keep) await rm(fileDest, { recursive: true, force: true })
  if (repo === undefined) return { file: fileRun }
  const runs: RsyncSshRun[] = []
  for (const extra of [[], ['-z']]) {
    console.log(`rsync over ssh ${['-a', ...extra].join(' ')}: the repo corpus (load ${load()})`)
    const dest = join(s.work, `rsync-repo${extra.join('')}`)
    runs.push(await rsyncOverSsh(s.sshd, `${repo.dir}/`, dest, extra))
    await checkTree(`rsync over ssh ${extra.join(' ')} repo`, dest, repo.tree)
    if (!o.keep) await removeTree(dest)
  }
  return { file: fileRun, repo: runs[0], repoZ: runs[1] }
}

function log (s: string): void { console.log(s) }

async function main (): Promise<void> {
  const o = parseArgs(process.argv.slice(2))
  ensureSshTools(REPO)
  const repoDir = o.repo === false ? undefined : findRepoCorpus()
  if (o.repo === true && repoDir === undefined) throw new Error('no repo corpus: run `npm run bench -- --quick --corpus repo` once, or pass --no-repo')
  if (o.repo !== false && repoDir === undefined) console.log('no repo corpus cached (`npm run bench -- --quick --corpus repo` builds it): the repo rows are left out')
  const s: State = { work: await mkdtemp(join(tmpdir(), 'deltamesh-bench-wire-')), keep: o.keep }
  const stopNow = (): void => { cleanup(s).finally(() => process.exit(130)) }
  process.once('SIGINT', stopNow)
  process.once('SIGTERM', stopNow)
  try {
    if (o.quietLoad !== undefined) await waitForQuiet(o.quietLoad, 10, log)
    const loadAtStart = load()
    const floorBytes = (o.floorMiB ?? o.sizeMiB) * MiB
    console.log(`floor: ${floorBytes / MiB} MiB over one bare libp2p stream, ${o.sendKiB} KiB send()s (load ${loadAtStart})`)
    const floor: FloorResult = await runFloor(s.work, floorBytes, o.sendKiB * 1024)
    const file = { path: join(s.work, 'file-source', 'incompressible.bin'), sha: '' }
    file.sha = await writeIncompressible(file.path, o.sizeMiB * MiB)
    const repo = repoDir === undefined ? undefined : { dir: repoDir, tree: await describeTree(repoDir) }
    const dm = await deltameshPhase(o, s, file, repo)
    const rs = await rsyncPhase(o, s, file, repo)
    const figures: WireFigures = { when: new Date().toISOString(), loadAtStart, loadAtEnd: load(), sizeMiB: o.sizeMiB, sendKiB: o.sendKiB, floor, dm, rs, repoDir, cipher: s.sshd?.cipher ?? '?', sshVersion: s.sshd?.version ?? '?' }
    console.log(`\n${wireReport(figures)}`)
    if (o.profile !== undefined) console.log(`\nCPU profiles of both agents (both first syncs, start-up and publish included) in ${o.profile}`)
    if (o.keep) console.log(`kept: ${s.work}${s.cluster === undefined ? '' : ` and ${s.cluster.dir}`}`)
  } finally {
    await cleanup(s)
  }
}

main().catch(err => { console.error(err); process.exitCode = 1 })
