// What a subscriber costs: CPU seconds, wall time, peak RSS and files per second of one subscribing agent
// for (1) the first sync of N small files, (2) a 1 % update of them, (3) the repo corpus's delta (v1 → v2).
// Run: npm run build && npm run bench:subscriber -- [--files 5000] [--no-repo] [--profile DIR] [--perf DIR] [--strace] [--keep]
// Two real agents (Cluster: separate processes, libp2p on 127.0.0.1, LevelDB): a publisher and the subscriber
// measured. Corpora are the cached ones of `npm run bench` (scripts/bench/corpus.ts; a small tree of another
// size is built into the same cache on first use; the repo corpus must have been built by `npm run bench`).
// CPU is /proc utime+stime of the subscriber, plus that of children it reaped (`sync -f` at finalize), between
// the publish returning and the subscriber holding the version (what it did for that version alone), shown
// with its user/system split (kernel time is most of a small file's cost: inode allocation, above all); peak
// RSS is VmHWM, reset before each round (clear_refs 5).
// Every mirror is compared with its source (type, mode, size, SHA-256); a difference fails the run.
import '../agent/polyfill.js'
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { isDeepStrictEqual } from 'node:util'
import { Cluster, type Site } from '../agent/demo/local-cluster.js'
import { describeTree } from '../agent/demo/tree-gen.js'
import { buildSmall, cacheDir } from './bench/corpus.js'
import { api, pointSource, wireAll } from './bench/deltamesh.js'
import { peakRssMiB, startPerf } from './bench/proc.js'

interface Options { files: number, repo: boolean, profile?: string, perfDir?: string, nodeArgs: string[], strace: boolean, keep: boolean, logLevel: string }

interface Round { name: string, files: number, cpu: number, user: number, sys: number, wall: number, rssMiB: number, strace?: string }

const CLK_TCK = (() => { try { return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100 } catch { return 100 } })()

/** utime and stime of pid, each with its reaped children's (cutime, cstime), in seconds. */
function cpuSplit (pid: number): { user: number, sys: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number)
  // fields 14–17 of proc(5), counted from 1; f[0] is field 3
  return { user: ((f[11] ?? 0) + (f[13] ?? 0)) / CLK_TCK, sys: ((f[12] ?? 0) + (f[14] ?? 0)) / CLK_TCK }
}

const SMALL_TREE = 'bench/small'
const REPO_TREE = 'bench/repo'
const SYNC_TIMEOUT_MS = 3_600_000
const AGENT_START_MS = 120_000

function parseArgs (argv: string[]): Options {
  const o: Options = { files: 5000, repo: true, nodeArgs: [], strace: false, keep: false, logLevel: 'warn' }
  for (let i = 0; i < argv.length; i++) {
    const value = (): string => { const v = argv[++i]; if (v === undefined) throw new Error(`${argv[i - 1]} needs a value`); return v }
    switch (argv[i]) {
      case '--files': o.files = Number(value()); break
      case '--no-repo': o.repo = false; break
      case '--profile': o.profile = value(); break
      case '--perf': o.perfDir = resolve(value()); break
      case '--strace': o.strace = true; break
      case '--node-arg': o.nodeArgs.push(value()); break
      case '--keep': o.keep = true; break
      case '--log-level': o.logLevel = value(); break
      case '--help':
        console.log('options: --files 5000 (small tree size; built and cached on first use) --no-repo --profile DIR (subscriber --cpu-prof) --perf DIR (perf record of the subscriber per round, DIR/<round>.data) --node-arg ARG (to the subscriber node, repeatable) --strace (syscall counts per round) --log-level LEVEL (the subscriber\'s, printed after the rounds) --keep')
        process.exit(0)
        break
      default: throw new Error(`unknown option ${argv[i]}`)
    }
  }
  if (!Number.isInteger(o.files) || o.files < 100) throw new Error('--files must be an integer ≥ 100')
  return o
}

/** Resets VmHWM so the next peak is this round's (Linux: /proc/PID/clear_refs, "5"). */
function resetPeakRss (pid: number): void {
  try { writeFileSync(`/proc/${pid}/clear_refs`, '5') } catch { /* older kernels: the peak is then the process's */ }
}

/** `strace -c -f` attached to the subscriber for one round; returns the summary's top lines. */
function attachStrace (pid: number, out: string): { stop: () => Promise<string> } {
  const child: ChildProcess = spawn('strace', ['-c', '-f', '-o', out, '-p', String(pid)], { stdio: 'ignore' })
  return {
    stop: async () => {
      const exited = new Promise<void>(resolve => child.once('exit', () => resolve()))
      child.kill('SIGINT')
      await exited
      const text = await readFile(out, 'utf8').catch(() => '')
      return text.split('\n').filter(l => /^\s*\d/.test(l)).slice(0, 12).concat(text.split('\n').filter(l => l.includes('total'))).join('\n')
    },
  }
}

async function round (name: string, o: Options, pub: Site, sub: Site, tree: string, source: string, target: string, mirror: string, files: number, work: string): Promise<Round> {
  const pid = sub.process?.pid as number
  await pointSource(source, target)
  const summary = await (await api(pub)).publish({ tree, source, label: name })
  await new Promise(resolve => setTimeout(resolve, 200))
  const trace = o.strace ? attachStrace(pid, join(work, `strace-${name}.txt`)) : undefined
  if (trace !== undefined) await new Promise(resolve => setTimeout(resolve, 500))
  const perf = o.perfDir === undefined ? undefined : await startPerf(pid, join(o.perfDir, `${name.replace(/[^a-z0-9]+/gi, '-')}.data`))
  resetPeakRss(pid)
  const c0 = cpuSplit(pid)
  const t0 = performance.now()
  await (await api(sub)).waitForSync(tree, { minSeq: summary.seq, signal: AbortSignal.timeout(SYNC_TIMEOUT_MS) })
  const c1 = cpuSplit(pid)
  await perf?.stop()
  const [user, sys] = [c1.user - c0.user, c1.sys - c0.sys]
  const r: Round = { name, files, cpu: user + sys, user, sys, wall: (performance.now() - t0) / 1000, rssMiB: peakRssMiB(pid) }
  if (trace !== undefined) r.strace = await trace.stop()
  const want = await describeTree(target)
  const got = await describeTree(mirror)
  if (!isDeepStrictEqual(got, want)) {
    const differing = [...new Set([...Object.keys(got), ...Object.keys(want)])].filter(k => got[k] !== want[k])
    throw new Error(`${name}: the mirror differs from ${target} in ${differing.length} entries, e.g. ${differing.slice(0, 5).join(', ')}`)
  }
  console.log(line(r))
  if (r.strace !== undefined) console.log(r.strace)
  return r
}

function line (r: Round): string {
  return `${r.name.padEnd(28)} files ${String(r.files).padStart(7)}  CPU ${r.cpu.toFixed(2).padStart(6)} s (user ${r.user.toFixed(2)}, sys ${r.sys.toFixed(2)}; ${(r.cpu / r.files * 1000).toFixed(2)} ms/file)  wall ${r.wall.toFixed(2).padStart(7)} s  peak RSS ${r.rssMiB.toFixed(0).padStart(4)} MiB  ${(r.files / r.wall).toFixed(0).padStart(6)} files/s`
}

async function main (): Promise<void> {
  const o = parseArgs(process.argv.slice(2))
  const base = cacheDir('quick')
  const small = await buildSmall(base, o.files, s => console.log(s))
  const repo = { v1: join(base, 'repo-v1'), v2: join(base, 'repo-v2') }
  if (o.repo && !(existsSync(`${repo.v1}.done`) && existsSync(`${repo.v2}.done`))) throw new Error(`no repo corpus in ${base}: run \`npm run bench -- --quick --corpus repo\` once, or pass --no-repo`)
  const work = await mkdtemp(join(tmpdir(), 'deltamesh-bench-sub-'))
  const cluster = await Cluster.create('deltamesh-bench-sub-')
  const cleanup = async (): Promise<void> => { await cluster.cleanup({ keepFiles: o.keep }); if (!o.keep) await rm(work, { recursive: true, force: true }) }
  process.once('SIGINT', () => { cleanup().finally(() => process.exit(130)) })
  try {
    const pub = await cluster.addSite('publisher')
    const sub = await cluster.addSite('subscriber')
    await wireAll([pub, sub], pub)
    await cluster.cli(['trust', '--home', sub.home, SMALL_TREE, pub.publisherKey])
    await cluster.cli(['trust', '--home', sub.home, REPO_TREE, pub.publisherKey])
    const nodeArgs = [...(o.profile !== undefined ? ['--cpu-prof', '--cpu-prof-dir', o.profile] : []), ...(o.perfDir !== undefined ? ['--perf-basic-prof'] : []), ...o.nodeArgs]
    if (o.perfDir !== undefined) await mkdir(o.perfDir, { recursive: true })
    await cluster.start(pub, { DELTAMESH_LOG_LEVEL: 'warn' }, [], AGENT_START_MS)
    await cluster.start(sub, { DELTAMESH_LOG_LEVEL: o.logLevel }, nodeArgs, AGENT_START_MS)
    const subApi = await api(sub)
    const smallMirror = join(cluster.dir, 'small-mirror')
    const repoMirror = join(cluster.dir, 'repo-mirror')
    await subApi.subscribe({ tree: SMALL_TREE, to: smallMirror })
    if (o.repo) await subApi.subscribe({ tree: REPO_TREE, to: repoMirror })
    const countFiles = async (dir: string): Promise<number> => Object.values(await describeTree(dir)).filter(v => v.startsWith('file ')).length
    console.log(`subscriber pid ${sub.process?.pid as number}; ${cluster.dir}`)
    const rounds: Round[] = []
    const smallSource = join(work, 'small-source')
    rounds.push(await round(`small ${o.files} first sync`, o, pub, sub, SMALL_TREE, smallSource, small.v1, smallMirror, await countFiles(small.v1), work))
    rounds.push(await round(`small ${o.files} 1 % update`, o, pub, sub, SMALL_TREE, smallSource, small.v2, smallMirror, await countFiles(small.v2), work))
    if (o.repo) {
      const repoSource = join(work, 'repo-source')
      rounds.push(await round('repo v1 first sync', o, pub, sub, REPO_TREE, repoSource, repo.v1, repoMirror, await countFiles(repo.v1), work))
      rounds.push(await round('repo v1 → v2 delta', o, pub, sub, REPO_TREE, repoSource, repo.v2, repoMirror, await countFiles(repo.v2), work))
    }
    await cluster.stop(sub, 'SIGTERM') // --cpu-prof writes its profile on a clean exit
    console.log(`\nsubscriber, ${new Date().toISOString()}, load ${(await readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' ')}`)
    for (const r of rounds) console.log(line(r))
    if (o.logLevel !== 'warn') console.log(`\nsubscriber log (last 200 kB):\n${sub.log}`)
    if (o.profile !== undefined) console.log(`CPU profile of the subscriber in ${o.profile}`)
  } finally {
    await cleanup()
  }
}

main().catch(err => { console.error(err); process.exitCode = 1 })
