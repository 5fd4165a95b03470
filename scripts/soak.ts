// Soak: months of a site daemon's life compressed into an hour (issue 21). A publisher and three subscribers
// (real processes, libp2p on 127.0.0.1; Cluster) — one behind an --include subset, one behind a 20 MB/s
// download limit, one whose home is a small tmpfs that fills once and is then given room. The publisher
// publishes a small, realistic change of a ~20,000-file tree every few seconds; every ~50 versions one agent
// is stopped (SIGTERM or SIGKILL, by --seed) and restarted. After each version every agent is sampled (RSS,
// heap used from /metrics, open fds, LevelDB size, home disk use, versions/ and staging/ entries, catalog
// version records). At the end: every subscriber holds the newest version byte-identical (the subset site:
// the source filtered the same way), `verify` is clean everywhere, and a line fitted over the samples after
// warm-up (first 10 %) shows nothing growing that should not. Writes soak.csv, soak.svg and soak.json.
//
// Run: npm run build && npm run soak -- [--quick] [--versions 1000] [--files 20000] [--interval 3] [--seed 1] [--out DIR]
import '../agent/polyfill.js'
import { mkdir, statfs, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { Cluster, runCli, sleep, type Site } from '../agent/demo/local-cluster.js'
import { appendPeer, appendTrust } from '../agent/core/config.js'
import { DEFAULT_RETAIN } from '../agent/versions/retention.js'
import { compileFilter } from '../agent/versions/filter.js'
import { describeTree, generateTree, prng } from '../agent/demo/tree-gen.js'
import { mutateForSoak } from './soak/mutate.js'
import { QUANTITIES, diskUse, sampleAgent, toCsv, withinProcessSlope, type Quantity, type Sample } from './soak/sample.js'
import { soakSvg } from './soak/plot.js'
import { mib, mountTmpfs, resizeTmpfs, shrinkToUse, unmount } from './soak/tmpfs.js'

const TREE = 'soak/compose/BaseOS'
const SUBSET = ['Packages/x86_64/', 'repodata/']
const SMALL_MAX = 16 * 1024
const IMAGES = 3
const IMAGE_BYTES = 16 * 1024 * 1024
/** RSS may drift this much per 100 versions and still be noise (issue 21). */
const RSS_SLOPE_MAX = 2
/** Open fds: libp2p connections come and go; a leak of one fd per version is 100 per 100 versions. */
const FD_SLOPE_MAX = 2
/** Versions the full disk is held full before it is given room. */
const FULL_HOLD = 5
const START_MS = 120_000

interface Options { versions: number, files: number, interval: number, seed: string, restartEvery: number, out: string, convergeS: number, keep: boolean }

function parseArgs (argv: string[]): Options {
  const o: Options = { versions: 1000, files: 20_000, interval: 3, seed: '1', restartEvery: 50, out: 'soak-out', convergeS: 900, keep: false }
  for (let i = 0; i < argv.length; i++) {
    const value = (): string => { const v = argv[++i]; if (v === undefined) throw new Error(`${argv[i - 1]} needs a value`); return v }
    const num = (min: number, max: number): number => { const n = Number(value()); if (!(n >= min && n <= max)) throw new Error(`${argv[i - 1]} must be a number in [${min}, ${max}]`); return n }
    switch (argv[i]) {
      case '--versions': o.versions = Math.round(num(20, 100_000)); break
      case '--files': o.files = Math.round(num(100, 500_000)); break
      case '--interval': o.interval = num(0, 600); break
      case '--seed': o.seed = value(); break
      case '--restart-every': o.restartEvery = Math.round(num(5, 100_000)); break
      case '--converge-timeout': o.convergeS = Math.round(num(30, 86_400)); break
      case '--out': o.out = value(); break
      case '--keep': o.keep = true; break
      // a few minutes: what a test or a quick check runs (the hour-long run is the default)
      case '--quick': Object.assign(o, { versions: 100, files: 2000, interval: 2, restartEvery: 25 }); break
      case '--help':
        console.log([
          'options (bounds in brackets):',
          '  --versions N          versions published [20, 100000], default 1000 (~1 h with 20,000 files)',
          `  --files N             small files in the tree [100, 500000], default 20000 (plus ${IMAGES} images of ${IMAGE_BYTES / 2 ** 20} MiB)`,
          '  --interval S          seconds between publishes [0, 600], default 3 (a slow publish is not waited for)',
          '  --quick               100 versions of 2,000 files every 2 s, an agent stopped every 25 (~4 min); options after it still apply',
          '  --seed S              picks which agent is stopped, with which signal, and every change; default 1',
          '  --restart-every N     versions between agent stops [5, 100000], default 50',
          '  --converge-timeout S  at the end, how long subscribers may take to hold the newest version; default 900',
          '  --out DIR             where soak.csv, soak.svg and soak.json go; default ./soak-out',
          '  --keep                keep the temp dir (agents\' homes, source, mirrors)',
          'the disk-full step needs root (mount -t tmpfs); without it the run says so and skips that step.',
          'exit status: 0 all checks passed, 1 a check failed, 2 the run itself broke.',
        ].join('\n'))
        process.exit(0)
        break
      default: throw new Error(`unknown option ${argv[i]}`)
    }
  }
  return o
}

interface Mark { version: number, label: string }

async function main (): Promise<number> {
  const o = parseArgs(process.argv.slice(2))
  const started = Date.now()
  const log = (line: string): void => { console.log(`[${((Date.now() - started) / 1000).toFixed(0).padStart(5)} s] ${line}`) }
  const random = prng(`soak-${o.seed}`)
  const cluster = await Cluster.create('deltamesh-soak-')
  const fullHome = join(cluster.dir, 'lab-full')
  let mounted = false
  const stopAll = async (): Promise<void> => {
    await Promise.all(cluster.sites.map(async s => await cluster.stop(s, 'SIGTERM')))
    if (mounted) { await unmount(fullHome); mounted = false }
  }
  const onSignal = (): void => { void stopAll().then(async () => await cluster.cleanup()).finally(() => process.exit(130)) }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  const samples: Sample[] = []
  const marks: Mark[] = []
  const problems: string[] = []
  const notes: string[] = []
  try {
    const source = join(cluster.dir, 'source')
    log(`generating ${o.files} files + ${IMAGES} images of ${IMAGE_BYTES / 2 ** 20} MiB`)
    await generateTree(source, { seed: `soak-${o.seed}`, files: o.files, largeBytes: IMAGES * IMAGE_BYTES, largeFiles: IMAGES, smallMax: SMALL_MAX })
    const sourceMiB = mib(await diskUse(source))
    const subsetMiB = mib((await Promise.all(SUBSET.map(async p => await diskUse(join(source, p))))).reduce((a, b) => a + b, 0))

    // the full-disk subscriber's home is a tmpfs of its own (before `init` writes into it)
    const roomMiB = Math.ceil(8 * sourceMiB + 256)
    const mountError = await mountTmpfs(fullHome, roomMiB)
    mounted = mountError === undefined
    if (!mounted) notes.push(`DISK-FULL STEP NOT RUN: mount -t tmpfs failed here (${mountError}); lab-full's home is an ordinary directory`)
    const origin = await cluster.addSite('origin')
    const full = await cluster.addSite('lab-full')
    const subset = await cluster.addSite('lab-subset')
    const limited = await cluster.addSite('lab-limited')
    const labs = [full, subset, limited]
    for (const a of cluster.sites) {
      for (const b of cluster.sites) if (a !== b) await appendPeer(join(a.home, 'config.toml'), b.multiaddr, b.name)
      await appendTrust(join(a.home, 'config.toml'), TREE, origin.publisherKey)
    }
    await cluster.editConfig(limited, { limits: { down: '20MB/s' } })
    for (const s of cluster.sites) await cluster.start(s, { DELTAMESH_LOG_LEVEL: 'warn' }, [], START_MS)
    const mirror = (s: Site): string => join(cluster.dir, `${s.name}-mirror`)
    for (const lab of labs) await cluster.api(lab).subscribe({ tree: TREE, to: mirror(lab), include: lab === subset ? SUBSET : undefined })
    log(`4 agents up (${sourceMiB.toFixed(0)} MiB tree; lab-subset takes ${SUBSET.join(' ')}: ${subsetMiB.toFixed(0)} MiB; lab-limited downloads at 20 MB/s; lab-full on ${mounted ? `a ${roomMiB} MiB tmpfs` : 'an ordinary disk'})`)

    const warmup = Math.max(2, Math.ceil(o.versions * 0.1))
    const fullAt = Math.max(warmup + 1, Math.round(o.versions * 0.4))
    let fullUntil = 0
    let fullCrashed = false
    let fullSizeKiB = 0
    let newest = 0
    const sampleAll = async (version: number): Promise<void> => {
      for (const s of cluster.sites) {
        const pid = s.process?.pid
        if (pid !== undefined) samples.push(await sampleAgent(s.name, pid, s.home, TREE, cluster.api(s), version, (Date.now() - started) / 1000))
      }
    }
    for (let v = 1; v <= o.versions; v++) {
      const t0 = Date.now()
      if (v > 1) await mutateForSoak(source, `soak-${o.seed}`, v, SMALL_MAX)
      const summary = await cluster.api(origin).publish({ tree: TREE, source, label: `soak-v${v}` })
      newest = summary.seq
      if (v === 1) {
        // the first full copy is not part of the life being measured: wait for it
        await Promise.all(labs.map(async lab => await cluster.api(lab).waitForSync(TREE, { minSeq: newest, signal: AbortSignal.timeout(o.convergeS * 1000) })))
        log(`v1 (${summary.files} files) held by all 3 subscribers`)
      }
      await sampleAll(v)

      if (mounted && v === fullAt) {
        const before = await statfs(fullHome)
        if (before.bavail * before.bsize < 2 * 1024 * 1024) notes.push(`lab-full's ${roomMiB} MiB tmpfs was already full before the planned step (v${v})`)
        const sizeKiB = await shrinkToUse(fullHome, 512)
        fullSizeKiB = sizeKiB
        fullUntil = v + FULL_HOLD
        marks.push({ version: v, label: 'lab-full: disk full' })
        log(`v${v}: lab-full's tmpfs shrunk to ${(sizeKiB / 1024).toFixed(1)} MiB (what it holds + a little) for ${FULL_HOLD} versions`)
      } else if (mounted && v === fullUntil) {
        const st = await cluster.api(full).status().catch(() => undefined)
        const alive = full.process !== undefined && full.process.exitCode === null && full.process.signalCode === null
        const t = st?.trees.find(x => x.name === TREE)
        const failed = t?.versions.filter(x => x.state === 'failed').map(x => x.seq) ?? []
        notes.push(`disk full for versions ${fullAt}–${v}: lab-full ${alive ? 'stayed up' : 'DIED'}, served seq ${t?.currentSeq ?? '?'} (newest ${newest}), versions marked failed: ${failed.join(', ') || 'none'}`)
        if (!alive) {
          fullCrashed = true
          problems.push(`lab-full exited on a full disk:\n${full.log.slice(-2000)}`)
          await cluster.start(full, { DELTAMESH_LOG_LEVEL: 'warn' }, [], START_MS)
        }
        // room: the planned size, or twice what it held if staging directories had already filled that
        await resizeTmpfs(fullHome, Math.max(roomMiB * 1024, 2 * fullSizeKiB))
        marks.push({ version: v, label: 'lab-full: room given' })
        log(`v${v}: lab-full given room again (${notes[notes.length - 1]})`)
      }
      if (v % o.restartEvery === 0 && v < o.versions) {
        const site = cluster.sites[Math.floor(random() * cluster.sites.length)] as Site
        const signal = random() < 0.5 ? 'SIGTERM' : 'SIGKILL'
        await cluster.stop(site, signal)
        await cluster.start(site, { DELTAMESH_LOG_LEVEL: 'warn' }, [], START_MS)
        marks.push({ version: v, label: `${signal} ${site.name}` })
        log(`v${v}: ${signal} ${site.name}, restarted`)
      }
      if (v % 10 === 0) log(`v${v} published (seq ${newest}); subscribers at ${samples.filter(s => s.version === v && s.agent !== 'origin').map(s => `${s.agent} ${s.currentSeq}`).join(', ')}`)
      await sleep(Math.max(0, t0 + o.interval * 1000 - Date.now()))
    }

    // the end: every subscriber holds the newest version, byte-identical; verify is clean everywhere
    log(`waiting up to ${o.convergeS} s for the subscribers to hold seq ${newest}`)
    const synced = await Promise.all(labs.map(async lab => await runCli(['sync', '--home', lab.home, TREE, '--seq', String(newest), '--timeout', String(o.convergeS)], { timeoutMs: (o.convergeS + 30) * 1000 })))
    await sleep(3000) // retention runs after the flip
    await sampleAll(o.versions + 1)
    const want = await describeTree(source)
    const filter = compileFilter({ include: SUBSET }) ?? (() => true)
    for (const [i, lab] of labs.entries()) {
      if (synced[i]?.code !== 0) problems.push(`${lab.name}: sync to seq ${newest} did not complete: ${synced[i]?.stderr.trim()}`)
      const got = await describeTree(mirror(lab)).catch((err: Error) => ({ error: err.message })) as Record<string, string>
      const expected = lab === subset ? selectLike(want, filter) : want
      const seen = lab === subset ? selectLike(got, () => true) : got
      const diff = Object.keys({ ...expected, ...seen }).filter(k => expected[k] !== seen[k])
      if (diff.length > 0) problems.push(`${lab.name}: mirror differs from the source at ${diff.length} path(s), e.g. ${diff.slice(0, 3).join(', ')}`)
    }
    for (const s of cluster.sites) {
      const r = await runCli(['verify', '--home', s.home, TREE, '--json'], { timeoutMs: 600_000 })
      const summary = r.code === 0 ? JSON.parse(r.stdout) as { files: number, problems: unknown[] } : undefined
      if (summary === undefined || summary.problems.length > 0) problems.push(`${s.name}: verify exited ${r.code}: ${(r.stdout + r.stderr).slice(0, 400)}`)
      else log(`verify ${s.name}: ${summary.files} files clean`)
    }

    // the trends after warm-up
    const after = samples.filter(s => s.version > warmup)
    const final = samples.filter(s => s.version === o.versions + 1)
    const slopes: Record<string, Record<Quantity, number>> = {}
    const dbWarm = (agent: string): number => Math.max(0, ...samples.filter(s => s.agent === agent && s.version <= warmup).map(s => s.dbMiB))
    for (const s of cluster.sites) {
      const mine = after.filter(x => x.agent === s.name)
      slopes[s.name] = Object.fromEntries(QUANTITIES.map(q => [q, withinProcessSlope(mine, q) * 100])) as Record<Quantity, number>
      const slope = slopes[s.name] as Record<Quantity, number>
      if (!(slope.rssMiB <= RSS_SLOPE_MAX)) problems.push(`${s.name}: RSS grows ${slope.rssMiB.toFixed(2)} MiB per 100 versions (> ${RSS_SLOPE_MAX})`)
      if (!(slope.fds <= FD_SLOPE_MAX)) problems.push(`${s.name}: open fds grow ${slope.fds.toFixed(2)} per 100 versions (> ${FD_SLOPE_MAX})`)
      const dbBound = 2 * dbWarm(s.name) + 16
      const dbMax = Math.max(...mine.map(x => x.dbMiB))
      if (dbMax > dbBound) problems.push(`${s.name}: LevelDB reached ${dbMax.toFixed(1)} MiB > bound ${dbBound.toFixed(1)} MiB`)
      const treeMiB = s === origin ? 0 : s === subset ? subsetMiB : sourceMiB
      const homeBound = dbBound + (DEFAULT_RETAIN + 2) * treeMiB + 16
      const homeMax = Math.max(...mine.map(x => x.homeMiB))
      if (homeMax > homeBound) problems.push(`${s.name}: home reached ${homeMax.toFixed(1)} MiB > bound ${homeBound.toFixed(1)} MiB`)
      const end = final.find(x => x.agent === s.name)
      if (end !== undefined && end.stagingDirs > 0) problems.push(`${s.name}: ${end.stagingDirs} staging director${end.stagingDirs === 1 ? 'y' : 'ies'} left at the end`)
      if (end !== undefined && end.versionDirs > DEFAULT_RETAIN + 1) problems.push(`${s.name}: ${end.versionDirs} version directories at the end (retain ${DEFAULT_RETAIN})`)
      console.log(`  ${s.name.padEnd(12)} per 100 versions: ${QUANTITIES.map(q => `${q} ${fmt(slope[q])}`).join(', ')}; LevelDB max ${dbMax.toFixed(1)}/${dbBound.toFixed(1)} MiB, home max ${homeMax.toFixed(1)}/${homeBound.toFixed(1)} MiB`)
    }
    if (fullCrashed) notes.push('lab-full was restarted after dying on the full disk')

    await mkdir(o.out, { recursive: true })
    const title = `deltamesh soak: ${o.versions} versions, ${o.files} files, seed ${o.seed}`
    await writeFile(join(o.out, 'soak.csv'), toCsv(samples))
    await writeFile(join(o.out, 'soak.svg'), soakSvg(samples, title, marks))
    await writeFile(join(o.out, 'soak.json'), JSON.stringify({ options: o, warmup, sourceMiB, subsetMiB, newest, slopesPer100Versions: slopes, marks, notes, problems, wallS: (Date.now() - started) / 1000 }, null, 2) + '\n')
    console.log(`\nwarm-up: versions 1–${warmup}; bounds: LevelDB ≤ 2 × its warm-up max + 16 MiB; home ≤ that + ${DEFAULT_RETAIN + 2} × the tree it holds (retain ${DEFAULT_RETAIN} + current + one staging) + 16 MiB`)
    for (const n of notes) console.log(`note: ${n}`)
    console.log(`samples: ${resolve(o.out, 'soak.csv')}, plot: ${resolve(o.out, 'soak.svg')}; wall time ${((Date.now() - started) / 1000).toFixed(0)} s`)
    if (problems.length === 0) { console.log(`VERDICT: PASS — ${o.versions} versions, every subscriber at seq ${newest} byte-identical, verify clean, nothing grew`); return 0 }
    console.log(`VERDICT: FAIL\n  ${problems.join('\n  ')}`)
    return 1
  } finally {
    // a run that broke still leaves what it sampled
    if (samples.length > 0) await mkdir(o.out, { recursive: true }).then(async () => await writeFile(join(o.out, 'soak.csv'), toCsv(samples))).catch(() => {})
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    await stopAll()
    if (o.keep) console.log(`kept ${cluster.dir}`)
    else await cluster.cleanup()
  }
}

function fmt (n: number): string { return Number.isFinite(n) ? (Math.abs(n) < 0.01 ? '0' : n.toFixed(2)) : 'n/a' }

/** The regular files and symlinks of a described tree that `keep` selects (directories left out: a subset mirror holds only the ones on the way). */
function selectLike (tree: Record<string, string>, keep: (path: string, type: 'file' | 'symlink') => boolean): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [path, d] of Object.entries(tree)) {
    if (d.startsWith('dir ')) continue
    if (keep(path, d.startsWith('link ') ? 'symlink' : 'file')) out[path] = d
  }
  return out
}

main().then(code => { process.exitCode = code }, (err: unknown) => {
  console.error(`soak: ${(err as Error).stack ?? String(err)}`)
  process.exitCode = 2
})
