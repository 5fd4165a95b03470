// What serving costs the origin: real agents (Cluster: one process each, libp2p on 127.0.0.1, LevelDB), a
// publisher holding a slice of a cached bench corpus (real .debs, an ISO image or small files), then
//   1. one subscriber syncs it from nothing (publisher CPU per MB it uploaded),
//   2. that subscriber stops; 4 fresh subscribers sync it at once (the swarm: the origin uploads ~1 copy),
//   3. all 4 stay connected and idle (publisher CPU per minute: gossip, beacons, timers).
// CPU is /proc utime+stime of the publisher process over each phase; "served" is its TCP bytes sent (ss,
// everything: frames, gossip, noise, yamux) and its own chunk counter. Every mirror is compared with the
// source afterwards (size and SHA-256 of every file); a difference fails the run.
//
// Run: npm run build && npm run bench:serve -- [--corpus repo|iso|small] [--mb 48] [--idle 60] [--profile DIR] [--perf DIR] [--keep] [--json]
// (--profile: the publisher runs under node --cpu-prof; the profile is written to DIR when it stops.
//  --perf: Linux perf samples the publisher during each phase, kernel included, JS frames named through
//  node --perf-basic-prof; V8's own profiler charged time spent preempted on this shared machine to whatever
//  JS frame was on the stack, perf's cpu-clock samples only time on a CPU. Needs `perf` (Debian linux-perf).)
// Corpora come from `npm run bench -- --quick` (~/.cache/deltamesh-bench/quick, or $DELTAMESH_BENCH_CACHE).
import '../agent/polyfill.js'
import { createHash } from 'node:crypto'
import { createReadStream, existsSync } from 'node:fs'
import { link, lstat, mkdir, open, readdir, realpath, stat, writeFile } from 'node:fs/promises'
import { homedir, loadavg } from 'node:os'
import { dirname, join, relative, resolve } from 'node:path'
import type { AgentStatus } from '../agent/api/api.js'
import { Cluster, type Site } from '../agent/demo/local-cluster.js'
import { AGENT_START_MS, TREE, api, waitSeq, wireAll } from './bench/deltamesh.js'
import { cpuOf, killStarted, peakRssMiB, sleep, startPerf } from './bench/proc.js'
import { TcpMeter } from './bench/tcp.js'

const SYNC_TIMEOUT_MS = 20 * 60_000

interface Options { corpus: 'repo' | 'iso' | 'small', mb: number, idleSeconds: number, subscribers: number, profileDir?: string, perfDir?: string, nodeArgs: string[], publisherLog?: string, statusMs?: number, keep: boolean, json: boolean }

function parseArgs (argv: string[]): Options {
  const o: Options = { corpus: 'repo', mb: 48, idleSeconds: 60, subscribers: 4, nodeArgs: [], keep: false, json: false }
  for (let i = 0; i < argv.length; i++) {
    const value = (): string => { const v = argv[++i]; if (v === undefined) throw new Error(`${argv[i - 1]} needs a value`); return v }
    switch (argv[i]) {
      case '--corpus': {
        const c = value()
        if (c !== 'repo' && c !== 'iso' && c !== 'small') throw new Error('--corpus is repo, iso or small')
        o.corpus = c
        break
      }
      case '--mb': o.mb = Number(value()); break
      case '--idle': o.idleSeconds = Number(value()); break
      case '--subscribers': o.subscribers = Number(value()); break
      case '--profile': o.profileDir = resolve(value()); break
      case '--perf': o.perfDir = resolve(value()); break
      case '--node-arg': o.nodeArgs.push(value()); break
      case '--publisher-log': o.publisherLog = resolve(value()); break
      case '--status-ms': o.statusMs = Number(value()); break
      case '--keep': o.keep = true; break
      case '--json': o.json = true; break
      case '--help':
        console.log([
          'options:',
          '  --corpus C      repo (.debs, default), iso (a prefix of the image) or small (small files), from the quick bench cache',
          '  --mb N          MB of the corpus the publisher serves (default 48): whole files in path order, or a prefix of the image',
          '  --idle S        seconds of idle measurement with the subscribers connected (default 60; 0 skips)',
          '  --subscribers N the concurrent round (default 4)',
          '  --profile DIR   run the publisher under node --cpu-prof --cpu-prof-dir DIR',
          '  --perf DIR      perf record the publisher during each phase (DIR/<phase>.data; perf report -i …)',
          '  --node-arg A    an extra node option for the publisher, repeatable (e.g. --trace-gc, V8 heap sizes)',
          '  --publisher-log FILE  write the publisher\'s output (its log, node\'s traces) to FILE at the end',
          '  --status-ms MS  every agent\'s [dashboard] statusIntervalMs (what the status gossip costs)',
          '  --keep          keep the temp dir',
          '  --json          print the figures as one JSON line too',
        ].join('\n'))
        process.exit(0)
        break
      default: throw new Error(`unknown option ${argv[i]}`)
    }
  }
  if (!(o.mb > 0)) throw new Error('--mb must be positive')
  if (!(o.idleSeconds >= 0)) throw new Error('--idle must be ≥ 0')
  if (!Number.isInteger(o.subscribers) || o.subscribers < 1) throw new Error('--subscribers must be a positive integer')
  return o
}

const cacheRoot = (): string => process.env.DELTAMESH_BENCH_CACHE ?? join(homedir(), '.cache', 'deltamesh-bench')

async function walkFiles (dir: string): Promise<string[]> {
  const out: string[] = []
  const entries = (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0)
  for (const e of entries) {
    const p = join(dir, e.name)
    if (e.isDirectory()) out.push(...await walkFiles(p))
    else if (e.isFile()) out.push(p)
  }
  return out
}

/** The publisher's source: hard links to whole corpus files in path order up to `mb`, or a copy of an image's first `mb` MB. */
async function buildSource (o: Options, dest: string): Promise<{ files: number, bytes: number }> {
  const names = { repo: 'repo-v2', iso: 'iso-v2', small: 'small-5000-v1' }
  const from = join(cacheRoot(), 'quick', names[o.corpus])
  if (!existsSync(`${from}.done`)) throw new Error(`${from} is not built: run npm run bench -- --quick --corpus ${o.corpus} once`)
  const limit = o.mb * 1e6
  let bytes = 0
  let files = 0
  await mkdir(dest, { recursive: true })
  for (const file of await walkFiles(from)) {
    const size = (await stat(file)).size
    const target = join(dest, relative(from, file))
    await mkdir(dirname(target), { recursive: true })
    if (o.corpus === 'iso') {
      // one image: a prefix of it (its bytes are what matters to the server, not that it mounts)
      const n = Math.min(size, limit - bytes)
      const src = await open(file, 'r')
      const out = await open(target, 'w')
      const buf = Buffer.allocUnsafe(1 << 20)
      for (let done = 0; done < n;) {
        const { bytesRead } = await src.read(buf, 0, Math.min(buf.length, n - done), done)
        if (bytesRead === 0) break
        await out.write(buf, 0, bytesRead)
        done += bytesRead
      }
      await src.close()
      await out.close()
      bytes += n
      files++
    } else {
      if (bytes + size > limit && files > 0) continue
      await link(file, target)
      bytes += size
      files++
    }
    if (bytes >= limit) break
  }
  return { files, bytes }
}

async function sha256 (file: string): Promise<string> {
  const h = createHash('sha256')
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer)
  return h.digest('hex')
}

/** Throws unless `mirror` holds exactly the files of `source` (relative path, size, SHA-256). */
async function checkMirror (source: string, mirror: string): Promise<void> {
  const want = await walkFiles(source)
  const root = await realpath(mirror)
  const have = await walkFiles(root)
  if (have.length !== want.length) throw new Error(`${mirror}: ${have.length} files, source has ${want.length}`)
  for (const file of want) {
    const rel = relative(source, file)
    const other = join(root, rel)
    const [a, b] = await Promise.all([lstat(file), lstat(other).catch(() => undefined)])
    if (b === undefined || a.size !== b.size || await sha256(file) !== await sha256(other)) throw new Error(`${mirror}: ${rel} differs from the source`)
  }
}

interface Phase { cpu: number, tcpSentMB: number, chunkMB: number, wall: number }

const counters = (s: AgentStatus): AgentStatus['counters'] => s.counters

/** Publisher CPU, TCP bytes sent and chunk bytes served while `work` runs. */
async function measure (pub: Site, perfDir: string | undefined, name: string, work: () => Promise<void>): Promise<Phase> {
  const pid = pub.process?.pid as number
  const pubApi = await api(pub)
  const before = counters(await pubApi.status())
  const meter = new TcpMeter(new Set([pid]))
  const perf = perfDir === undefined ? undefined : await startPerf(pid, join(perfDir, `${name}.data`))
  const c0 = cpuOf(pid).self
  const t0 = performance.now()
  await work()
  const wall = (performance.now() - t0) / 1000
  const cpu = cpuOf(pid).self - c0
  await perf?.stop()
  const tcp = meter.stop()
  const after = counters(await pubApi.status())
  return { cpu, wall, tcpSentMB: (tcp.perPid.get(pid)?.sent ?? NaN) / 1e6, chunkMB: (after.chunkBytesUp - before.chunkBytesUp) / 1e6 }
}

async function main (): Promise<void> {
  const o = parseArgs(process.argv.slice(2))
  const log = (s: string): void => { console.error(`[bench-serve] ${s}`) }
  const cluster = await Cluster.create('deltamesh-bench-serve-')
  const stopAll = (): void => { killStarted(); for (const s of cluster.sites) s.process?.kill('SIGKILL'); process.exit(130) }
  process.once('SIGINT', stopAll)
  try {
    const source = join(cluster.dir, 'source')
    const built = await buildSource(o, source)
    log(`${o.corpus}: ${built.files} files, ${(built.bytes / 1e6).toFixed(1)} MB in ${source}; load ${loadavg()[0]?.toFixed(2)}`)
    const pub = await cluster.addSite('publisher')
    const solo = await cluster.addSite('solo')
    const many: Site[] = []
    for (let i = 1; i <= o.subscribers; i++) many.push(await cluster.addSite(`sub-${i}`))
    await wireAll([pub, solo, ...many], pub)
    if (o.statusMs !== undefined) for (const s of cluster.sites) await cluster.editConfig(s, { dashboard: { statusIntervalMs: o.statusMs } })
    const env = { DELTAMESH_LOG_LEVEL: 'warn' }
    const pubArgs = [
      ...(o.profileDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', o.profileDir]),
      ...(o.perfDir === undefined ? [] : ['--perf-basic-prof']),
      ...o.nodeArgs,
    ]
    if (o.perfDir !== undefined) await mkdir(o.perfDir, { recursive: true })
    await cluster.start(pub, env, pubArgs, AGENT_START_MS)
    await cluster.start(solo, env, [], AGENT_START_MS)
    const pubApi = await api(pub)
    const summary = await pubApi.publish({ tree: TREE, source, label: 'serve' })
    log(`published seq ${summary.seq}`)

    const one = await measure(pub, o.perfDir, 'one', async () => {
      await (await api(solo)).subscribe({ tree: TREE, to: join(cluster.dir, 'solo-mirror') })
      await waitSeq([solo], summary.seq, SYNC_TIMEOUT_MS)
    })
    log(`1 subscriber: publisher ${one.cpu.toFixed(2)} CPU s, ${one.tcpSentMB.toFixed(1)} MB sent (${one.chunkMB.toFixed(1)} MB chunks), ${one.wall.toFixed(1)} s wall`)
    await cluster.stop(solo, 'SIGTERM')
    await checkMirror(source, join(cluster.dir, 'solo-mirror'))

    // the subscribers connect and exchange heads inside the measurement: that is part of what serving costs
    const four = await measure(pub, o.perfDir, 'four', async () => {
      await Promise.all(many.map(async s => { await cluster.start(s, env, [], AGENT_START_MS) }))
      await Promise.all(many.map(async s => { await (await api(s)).subscribe({ tree: TREE, to: join(cluster.dir, `${s.name}-mirror`) }) }))
      await waitSeq(many, summary.seq, SYNC_TIMEOUT_MS)
    })
    log(`${o.subscribers} subscribers: publisher ${four.cpu.toFixed(2)} CPU s, ${four.tcpSentMB.toFixed(1)} MB sent (${four.chunkMB.toFixed(1)} MB chunks), ${four.wall.toFixed(1)} s wall`)
    for (const s of many) await checkMirror(source, join(cluster.dir, `${s.name}-mirror`))

    let idle: Phase | undefined
    if (o.idleSeconds > 0) {
      await sleep(5_000) // let the last HAVEs and status gossip of the sync settle
      idle = await measure(pub, o.perfDir, 'idle', async () => { await sleep(o.idleSeconds * 1000) })
      log(`idle with ${o.subscribers} peers: publisher ${(idle.cpu * 60 / idle.wall).toFixed(2)} CPU s per minute, ${(idle.tcpSentMB * 1e3 * 60 / idle.wall).toFixed(1)} kB/min sent`)
    }
    const rss = peakRssMiB(pub.process?.pid as number)
    for (const s of cluster.sites) await cluster.stop(s, 'SIGTERM')
    if (o.publisherLog !== undefined) await writeFile(o.publisherLog, pub.log)

    const perMB = (p: Phase): string => (p.cpu / p.tcpSentMB * 1000).toFixed(1)
    const row = (name: string, p: Phase): string => `| ${name} | ${p.tcpSentMB.toFixed(1)} | ${p.chunkMB.toFixed(1)} | ${p.cpu.toFixed(2)} | ${perMB(p)} | ${p.wall.toFixed(1)} |`
    console.log(`corpus ${o.corpus}, ${(built.bytes / 1e6).toFixed(1)} MB in ${built.files} files; load ${loadavg()[0]?.toFixed(2)} at the end; publisher peak RSS ${rss.toFixed(0)} MiB`)
    console.log('| phase | publisher TCP sent, MB | chunk bytes served, MB | publisher CPU s | CPU ms per MB sent | wall s |')
    console.log('| --- | ---: | ---: | ---: | ---: | ---: |')
    console.log(row('1 subscriber', one))
    console.log(row(`${o.subscribers} subscribers at once`, four))
    if (idle !== undefined) console.log(`| idle ${o.idleSeconds} s, ${o.subscribers} peers connected | ${idle.tcpSentMB.toFixed(3)} | ${idle.chunkMB.toFixed(3)} | ${idle.cpu.toFixed(2)} (${(idle.cpu * 60 / idle.wall).toFixed(2)} per min) | — | ${idle.wall.toFixed(1)} |`)
    if (o.json) console.log(JSON.stringify({ corpus: o.corpus, mb: built.bytes / 1e6, one, four, idle, rssMiB: rss }))
    if (o.profileDir !== undefined) log(`publisher profile in ${o.profileDir}`)
  } finally {
    await cluster.cleanup({ keepFiles: o.keep })
    if (o.keep) log(`kept ${cluster.dir}`)
  }
}

main().catch((err: unknown) => {
  console.error(err)
  killStarted()
  process.exitCode = 1
})
