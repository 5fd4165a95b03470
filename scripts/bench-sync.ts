// Sync benchmark: one publisher and 4 subscribers on 127.0.0.1 update a generated tree (~500 MB) from v1 to
// v2, next to an rsync daemon on 127.0.0.1 serving the same update to 4 concurrent clients, in the same run.
// Figures: wire bytes per subscriber, publisher (daemon) upload in total against one delta, publisher (daemon)
// CPU seconds, wall time. Every destination is compared with the source afterwards; a wrong tree fails the run.
//
// Run: npm run build && npm run bench:sync -- [--size 500] [--no-z] [--profile DIR] [--perf DIR] [--keep] [--write-docs|--no-docs]
// (--profile: the 5 agents are restarted under --cpu-prof after v1, so the profiles cover the v2 round)
// Everything (agents, rsync daemon and clients, temp dirs) is stopped and removed at the end, also on Ctrl-C.
import '../agent/polyfill.js'
import { mkdir, mkdtemp, rm, utimes } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { basename, dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { isDeepStrictEqual } from 'node:util'
import { Cluster, freePort, type Site } from '../agent/demo/local-cluster.js'
import { describeTree, generateTree, mutateTree, type TreeSpec } from '../agent/demo/tree-gen.js'
import { chunkSet } from './bench/chunk-set.js'
import { api } from './bench/deltamesh.js'
import { startRsyncDaemon, type RsyncDaemon } from './bench/incumbents.js'
import { killStarted, run } from './bench/proc.js'
import { chunkingFloor, deltameshRound, syncAll, SYNC_SUBSCRIBERS as SUBSCRIBERS, SYNC_TREE as TREE, waitReconnected } from './bench/sync-deltamesh.js'
import { machine, mb, render, writeDocs, type Report } from './bench/sync-report.js'
import { ensureRsync, rsyncClientsRound, type RsyncClientsRound } from './bench/sync-rsync.js'

const DEFAULT_SIZE_MB = 500
/** mutateTree stamps every file with this mtime (tree-gen.ts); changed files get a later one here. */
const V2_MTIME = new Date('2026-11-02T12:00:00Z')

const here = dirname(fileURLToPath(import.meta.url))
/** Repository root, whether this runs from dist/scripts or (tsx) from scripts/. */
const REPO = basename(dirname(here)) === 'dist' ? resolve(here, '..', '..') : resolve(here, '..')

interface Options { sizeMB: number, z: boolean, keep: boolean, logs: boolean, profileDir?: string, perfDir?: string, docs: 'auto' | 'yes' | 'no' }

function parseArgs (argv: string[]): Options {
  const o: Options = { sizeMB: DEFAULT_SIZE_MB, z: true, keep: false, logs: false, docs: 'auto' }
  for (let i = 0; i < argv.length; i++) {
    const value = (): string => { const v = argv[++i]; if (v === undefined) throw new Error(`${argv[i - 1]} needs a value`); return v }
    switch (argv[i]) {
      case '--size': o.sizeMB = Number(value()); break
      case '--no-z': o.z = false; break
      case '--keep': o.keep = true; break
      case '--logs': o.logs = true; break
      case '--profile': o.profileDir = resolve(value()); break
      case '--perf': o.perfDir = resolve(value()); break
      case '--write-docs': o.docs = 'yes'; break
      case '--no-docs': o.docs = 'no'; break
      case '--help':
        console.log([
          'options:',
          `  --size MB       tree size (default ${DEFAULT_SIZE_MB}): 60 % small files of 0..256 KiB, 40 % in 4 disk images`,
          '  --no-z          skip the rsync -z round',
          '  --profile DIR   restart the 5 agents under --cpu-prof before the v2 round (DIR/<site>/, written when they stop)',
          '  --perf DIR      restart the publisher and sub-1 with --perf-basic-prof before the v2 round; perf records the publish, the serving and the sync of sub-1 (DIR/publish.data, DIR/serve.data, DIR/sub-1.data; sub-1 from the end of the publish)',
          '  --keep          keep the temp dirs (agents and daemon are stopped all the same)',
          '  --logs          publisher and sub-1 log at info; their lines of the v2 round are printed',
          `  --write-docs    write the results into docs/benchmarks.md (default: only at --size ${DEFAULT_SIZE_MB}); --no-docs never`,
        ].join('\n'))
        process.exit(0)
        break
      default: throw new Error(`unknown option ${argv[i]}`)
    }
  }
  if (!Number.isFinite(o.sizeMB) || o.sizeMB < 10) throw new Error('--size must be at least 10 (MB)')
  return o
}

/** ~60 % of the bytes in many small files (0..256 KiB, mean 64 KiB), ~40 % in 4 large images. */
function specFor (sizeMB: number): TreeSpec {
  const bytes = sizeMB * 1e6
  const smallMax = 256 * 1024
  return { seed: 'deltamesh-bench-sync', files: Math.max(50, Math.round(0.6 * bytes / (smallMax / 4))), largeBytes: Math.round(0.4 * bytes), largeFiles: 4, smallMax }
}

async function expectSame (what: string, root: string, expected: Record<string, string>): Promise<void> {
  const got = await describeTree(root)
  if (isDeepStrictEqual(got, expected)) return
  const differing = [...new Set([...Object.keys(got), ...Object.keys(expected)])].filter(k => got[k] !== expected[k])
  throw new Error(`${what} (${root}) differs from the source in ${differing.length} entries, e.g. ${differing.slice(0, 5).join(', ')}`)
}

const treeBytes = (d: Record<string, string>): number => Object.values(d).reduce((n, v) => n + (v.startsWith('file') ? Number(v.split(' ')[2]) : 0), 0)

// ---------------------------------------------------------------------------------------------------------

async function main (): Promise<void> {
  const o = parseArgs(process.argv.slice(2))
  await ensureRsync(REPO)
  const spec = specFor(o.sizeMB)
  const timeoutMs = Math.max(300_000, o.sizeMB * 2_000)
  const dir = await mkdtemp(join(tmpdir(), 'deltamesh-bench-sync-'))
  let cluster: Cluster | undefined
  let daemon: RsyncDaemon | undefined
  let cleaning = false
  const cleanup = async (): Promise<void> => {
    if (cleaning) return
    cleaning = true
    if (daemon !== undefined) daemon.child.kill('SIGTERM')
    killStarted()
    if (cluster !== undefined) {
      if (o.profileDir !== undefined) await Promise.all(cluster.sites.map(async s => await cluster!.stop(s, 'SIGTERM'))) // a clean exit writes the profiles
      await cluster.cleanup({ keepFiles: o.keep })
    }
    if (!o.keep) await rm(dir, { recursive: true, force: true })
    else console.log(`kept ${dir}${cluster === undefined ? '' : ` and ${cluster.dir}`}`)
  }
  const onSignal = (): void => { console.error('\ninterrupted: stopping agents and rsync, removing temp dirs'); void cleanup().finally(() => process.exit(130)) }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  const step = (what: string): () => void => {
    const t = performance.now()
    process.stdout.write(`${what} … `)
    return () => { console.log(`${((performance.now() - t) / 1000).toFixed(1)} s`) }
  }
  try {
    console.log(`machine: ${machine()}`)
    const source = join(dir, 'source')
    let done = step(`generating v1 (~${o.sizeMB} MB: ${spec.files} small files, ${spec.largeFiles} images) in ${source}`)
    await generateTree(source, spec)
    done()
    done = step('describing v1 and listing its chunks')
    const v1 = await describeTree(source)
    const v1Chunks = await chunkSet(source, 600_000)
    done()
    console.log(`  v1: ${Object.keys(v1).length} entries, ${mb(treeBytes(v1))} MB, ${v1Chunks.size} distinct chunks`)

    const rsyncDests = Array.from({ length: SUBSCRIBERS }, (_, i) => join(dir, `rsync-${i + 1}`))
    const rsyncZDests = o.z ? Array.from({ length: SUBSCRIBERS }, (_, i) => join(dir, `rsync-z-${i + 1}`)) : []
    done = step(`copying v1 to ${rsyncDests.length + rsyncZDests.length} rsync destinations (cp -a)`)
    for (const d of [...rsyncDests, ...rsyncZDests]) {
      const r = await run('cp', ['-a', `${source}/.`, d])
      if (r.code !== 0) throw new Error(`cp -a to ${d} failed: ${r.stderr}`)
    }
    done()

    done = step('starting 5 agents (1 publisher, 4 subscribers), publishing v1 and syncing it everywhere')
    cluster = await Cluster.create('deltamesh-bench-sync-cluster-')
    const publisher = await cluster.addSite('publisher')
    const subs: Site[] = []
    for (let i = 1; i <= SUBSCRIBERS; i++) subs.push(await cluster.addSite(`sub-${i}`))
    await cluster.wire(TREE, publisher)
    // info lines only for --logs (publisher and sub-1): writing them costs CPU the figures would include
    const logLevel = (s: Site): string => o.logs && (s === publisher || s === subs[0]) ? 'info' : 'warn'
    for (const s of [publisher, ...subs]) await cluster.start(s, { DELTAMESH_LOG_LEVEL: logLevel(s) })
    const mirrors = subs.map(s => join(cluster!.dir, `${s.name}-mirror`))
    for (const [i, s] of subs.entries()) await (await api(s)).subscribe({ tree: TREE, to: mirrors[i] as string })
    const v1Published = await (await api(publisher)).publish({ tree: TREE, source, label: 'v1' })
    await syncAll(subs, v1Published.seq, timeoutMs)
    done()
    done = step('checking the 4 subscribers hold v1 exactly')
    for (const [i, m] of mirrors.entries()) await expectSame(`subscriber ${i + 1} at v1`, m, v1)
    done()

    if (o.perfDir !== undefined) {
      // JS frames named for perf: the publisher and sub-1 restarted with --perf-basic-prof, then connected again
      done = step('--perf: restarting the publisher and sub-1 with --perf-basic-prof')
      await mkdir(o.perfDir, { recursive: true })
      const profiled = [publisher, subs[0] as Site]
      for (const s of profiled) await cluster.stop(s, 'SIGTERM')
      for (const s of profiled) await cluster.start(s, { DELTAMESH_LOG_LEVEL: logLevel(s) }, ['--perf-basic-prof'])
      await waitReconnected(profiled)
      done()
    }

    if (o.profileDir !== undefined) {
      // profiles of the v2 round only: restart every agent under --cpu-prof, wait until they are all connected again
      done = step('--profile: restarting the 5 agents with --cpu-prof')
      const profileDir = o.profileDir
      for (const s of [publisher, ...subs]) await cluster.stop(s, 'SIGTERM')
      for (const s of [publisher, ...subs]) await cluster.start(s, { DELTAMESH_LOG_LEVEL: logLevel(s) }, ['--cpu-prof', `--cpu-prof-dir=${join(profileDir, s.name)}`])
      await waitReconnected([publisher, ...subs])
      done()
    }

    daemon = await startRsyncDaemon(dir, source, await freePort())
    console.log(`rsync daemon (pid ${daemon.pid}) on 127.0.0.1:${daemon.port}`)

    done = step('mutating the source to v2')
    const mutation = await mutateTree(source, 'bench-sync-v2')
    const v2 = await describeTree(source)
    // a real update gives what changed a new mtime (mutateTree stamps all with one fixed time)
    const changedPaths: string[] = []
    for (const [rel, desc] of Object.entries(v2)) {
      if (desc.startsWith('file') && v1[rel] !== desc) { await utimes(join(source, rel), V2_MTIME, V2_MTIME); changedPaths.push(rel) }
    }
    const bumped = changedPaths.length
    const floor = await chunkingFloor(source, changedPaths)
    const v2Chunks = await chunkSet(source, 600_000)
    let deltaBytes = 0
    let deltaChunks = 0
    for (const [id, size] of v2Chunks) if (!v1Chunks.has(id)) { deltaBytes += size; deltaChunks++ }
    done()
    const mutationText = `${mutation.changed} files edited, ${mutation.added} added, ${mutation.deleted} deleted, ${mutation.renamed} renamed, ${mutation.insertedBytes / 1000} KB inserted in an image (${bumped} files got a new mtime)`
    console.log(`  ${mutationText}; one delta: ${mb(deltaBytes)} MB in ${deltaChunks} new chunks`)

    done = step('rsync: 4 concurrent clients pull v2 from the daemon')
    const rsync = await rsyncClientsRound('rsync', daemon, rsyncDests, [])
    done()
    let rsyncZ: RsyncClientsRound | undefined
    if (o.z) {
      done = step('rsync -z: 4 concurrent clients pull v2 from the daemon')
      rsyncZ = await rsyncClientsRound('rsync -z', daemon, rsyncZDests, ['-z'])
      done()
    }
    done = step('checking the rsync destinations hold v2 exactly')
    for (const d of [...rsyncDests, ...rsyncZDests]) await expectSame('rsync destination', d, v2)
    done()

    done = step('deltamesh: publisher publishes v2, 4 subscribers sync it')
    // keep only this round's lines
    const logged = [publisher, subs[0] as Site]
    if (o.logs) for (const s of logged) s.log = ''
    const dm = await deltameshRound(publisher, subs, source, timeoutMs, o.perfDir)
    done()
    if (o.logs) for (const s of logged) console.log(`\n${s.name} log of the v2 round:\n${s.log.trimEnd()}\n`)
    if (dm.results.some(r => r.seq !== dm.publish.seq)) throw new Error(`subscribers synced seq ${dm.results.map(r => r.seq).join(',')}, expected ${dm.publish.seq}`)
    done = step('checking the 4 subscribers hold v2 exactly')
    for (const [i, m] of mirrors.entries()) await expectSame(`subscriber ${i + 1} at v2`, m, v2)
    done()

    const report: Report = {
      date: new Date().toISOString().slice(0, 10),
      machine: machine(),
      tree: { files: Object.values(v2).filter(v => v.startsWith('file')).length, bytes: treeBytes(v2), spec, mutation: mutationText },
      delta: { bytes: deltaBytes, chunks: deltaChunks },
      floor,
      rsync, rsyncZ, dm,
    }
    const rendered = render(report)
    console.log(`\n${report.date}, ${report.machine}`)
    console.log(`tree v2: ${report.tree.files} files, ${mb(report.tree.bytes)} MB; one delta ${mb(deltaBytes)} MB (${deltaChunks} chunks)\n`)
    console.log(rendered.table)
    console.log(`\n${rendered.targets}\n`)
    console.log(rendered.lines)
    if (o.docs === 'yes' || (o.docs === 'auto' && o.sizeMB === DEFAULT_SIZE_MB)) console.log(`\nresults written to ${await writeDocs(REPO, report, rendered)}`)
    if (o.profileDir !== undefined) console.log(`\nCPU profiles of the 5 agents: ${o.profileDir}/<site>/ (written when the agents stop)`)
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    await cleanup()
  }
}

main().catch((err: unknown) => {
  console.error(err)
  process.exitCode = 1
})
