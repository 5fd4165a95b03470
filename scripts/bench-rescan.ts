// Publish and rescan benchmark: how long does the first publish of a tree of many small files take, and how
// long (and how much memory) does re-publishing it unchanged take, against `rsync -a --dry-run --stats` of
// the same tree to an identical copy (rsync's "nothing to do" pass)?
// Run: npm run bench:rescan -- [--files 100000] [--max-size 4096] [--keep]; or npx tsx scripts/bench-rescan.ts.
// Each publish runs in a child process of its own (same code as `deltamesh publish`: publishVersion with a
// ChunkerPool of every core) so that its peak RSS is its own. Everything lives in one temp dir, removed at the
// end (also on Ctrl-C) unless --keep.
import '../agent/polyfill.js'
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { generateKeyPairSync, randomFillSync } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { lstat, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { availableParallelism, cpus, release, tmpdir, totalmem } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ChunkerPool } from '../agent/chunk/pool.js'
import { DEFAULT_CHUNKING } from '../protocol/chunking.js'
import { silentLogger } from '../agent/core/log.js'
import { publishVersion } from '../agent/publish/publish.js'
import { openStore } from '../agent/store/index.js'

interface Options { files: number, maxSize: number, perDir: number, keep: boolean }

/** What a publish child reports. */
interface PublishFigures { files: number, bytes: number, cachedFiles: number, verifiedFiles: number, filesRead: number, manifestBytes: number, seconds: number, cpuSeconds: number, maxRssMiB: number, root: string, seq: number }

/** ctime of a written file cannot be set back (utimes changes it too): the racy window must pass for real. */
const RACY_WINDOW_MS = 2000
const WRITE_BATCH = 512

function parseArgs (argv: string[]): Options {
  const o: Options = { files: 100_000, maxSize: 4096, perDir: 100, keep: false }
  for (let i = 0; i < argv.length; i++) {
    const value = (): string => { const v = argv[++i]; if (v === undefined) throw new Error(`${argv[i - 1]} needs a value`); return v }
    switch (argv[i]) {
      case '--files': o.files = Number(value()); break
      case '--max-size': o.maxSize = Number(value()); break
      case '--per-dir': o.perDir = Number(value()); break
      case '--keep': o.keep = true; break
      case '--help': console.log('options: --files 100000 --max-size 4096 (bytes; sizes are uniform in 0..max) --per-dir 100 --keep'); process.exit(0)
      default: throw new Error(`unknown option ${argv[i]}`)
    }
  }
  if (!Number.isInteger(o.files) || o.files < 1 || !Number.isInteger(o.maxSize) || o.maxSize < 0 || !Number.isInteger(o.perDir) || o.perDir < 1) throw new Error('--files, --per-dir must be positive integers, --max-size ≥ 0')
  return o
}

/** Relative path of file i: two levels of directories (~perDir files per leaf, ~perDir leaves per top dir). */
function pathOf (i: number, perDir: number): string {
  const leaf = Math.floor(i / perDir)
  return `d${String(Math.floor(leaf / perDir)).padStart(3, '0')}/s${String(leaf % perDir).padStart(3, '0')}/f${i}.bin`
}

/** Writes `files` random files of 0..maxSize bytes, WRITE_BATCH at a time; returns total bytes. */
async function generate (root: string, o: Options): Promise<number> {
  const leaves = new Set<string>()
  for (let i = 0; i < o.files; i += o.perDir) leaves.add(join(root, pathOf(i, o.perDir), '..'))
  for (const d of leaves) await mkdir(d, { recursive: true })
  const pool = randomFillSync(Buffer.allocUnsafe(16 * 1024 * 1024))
  let bytes = 0
  for (let start = 0; start < o.files; start += WRITE_BATCH) {
    const batch: Array<Promise<void>> = []
    for (let i = start; i < Math.min(o.files, start + WRITE_BATCH); i++) {
      const size = Math.floor(Math.random() * (o.maxSize + 1))
      const at = Math.floor(Math.random() * (pool.length - size))
      bytes += size
      // distinct random slices: every file's content is (all but surely) unique, as in a package tree
      batch.push(writeFile(join(root, pathOf(i, o.perDir)), pool.subarray(at, at + size)))
    }
    await Promise.all(batch)
  }
  return bytes
}

/** Child mode: one publish of SRC into the store at DB, figures as JSON on stdout. */
async function publishChild (src: string, db: string, keyPem: string): Promise<void> {
  const { createPrivateKey } = await import('node:crypto')
  const store = await openStore(db)
  const pool = new ChunkerPool({ size: availableParallelism() })
  let filesRead = 0
  try {
    const started = process.hrtime.bigint()
    const cpu0 = process.cpuUsage()
    const r = await publishVersion({
      tree: 'bench/rescan',
      source: src,
      index: store.index,
      catalog: store.catalog,
      publisherKey: createPrivateKey(keyPem),
      chunking: DEFAULT_CHUNKING,
      chunkFile: async (path, signal, size) => { filesRead++; return await pool.chunkFile(path, DEFAULT_CHUNKING, signal, size) },
      verifyFile: async (path, chunks, signal) => { filesRead++; return await pool.verifyFile(path, chunks, signal) },
      log: silentLogger(),
    })
    const seconds = Number(process.hrtime.bigint() - started) / 1e9
    const cpu = process.cpuUsage(cpu0)
    const figures: PublishFigures = {
      files: r.stats.files, bytes: r.stats.bytes, cachedFiles: r.stats.cachedFiles, verifiedFiles: r.stats.verifiedFiles, filesRead, manifestBytes: r.stats.manifestBytes,
      seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6, maxRssMiB: peakRssMiB(), root: r.rootHex, seq: r.envelope.seq,
    }
    process.stdout.write(JSON.stringify(figures) + '\n')
  } finally {
    await pool.close()
    await store.close()
  }
}

/** Peak resident set of this process (VmHWM; resourceUsage().maxRSS where /proc is absent). */
function peakRssMiB (): number {
  if (existsSync('/proc/self/status')) {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'))
    if (m !== null) return Number(m[1]) / 1024
  }
  return process.resourceUsage().maxRSS / 1024
}

async function runPublishChild (src: string, db: string, keyPem: string): Promise<PublishFigures> {
  const self = fileURLToPath(import.meta.url)
  return await new Promise((resolveRun, reject) => {
    const child = spawn(process.execPath, [...process.execArgv, self, '--child-publish', src, db], { stdio: ['pipe', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (d: Buffer) => { out += d.toString() })
    child.on('error', reject)
    child.on('close', code => {
      if (code !== 0) { reject(new Error(`publish child exited ${code}`)); return }
      try { resolveRun(JSON.parse(out) as PublishFigures) } catch (err) { reject(err) }
    })
    child.stdin.end(keyPem)
  })
}

interface RsyncFigures { seconds: number, maxRssMiB?: number, filesTransferred?: number, files?: number }

/** `rsync -a --dry-run --stats src/ copy/` with the copy already identical; peak RSS via /usr/bin/time when present. */
function runRsync (src: string, copy: string): RsyncFigures {
  const args = ['-a', '--dry-run', '--stats', `${src}/`, `${copy}/`]
  const timed = existsSync('/usr/bin/time')
  const started = process.hrtime.bigint()
  const r = timed
    ? spawnSync('/usr/bin/time', ['-f', 'MAXRSS %M', 'rsync', ...args], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 })
    : spawnSync('rsync', args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 })
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  if (r.status !== 0) throw new Error(`rsync exited ${r.status}: ${r.stderr}`)
  const rss = /MAXRSS (\d+)/.exec(r.stderr)
  const transferred = /Number of regular files transferred: ([\d,]+)/.exec(r.stdout)
  const files = /Number of files: ([\d,]+)/.exec(r.stdout)
  return {
    seconds,
    // GNU time reports the largest of rsync's processes (sender, receiver and generator are separate processes)
    maxRssMiB: rss === null ? undefined : Number(rss[1]) / 1024,
    filesTransferred: transferred === null ? undefined : Number(transferred[1]!.replaceAll(',', '')),
    files: files === null ? undefined : Number(files[1]!.replaceAll(',', '')),
  }
}

function hasRsync (): boolean {
  return spawnSync('rsync', ['--version'], { stdio: 'ignore' }).status === 0
}

function machine (): string {
  const model = cpus()[0]?.model.trim() ?? 'unknown CPU'
  let fs = ''
  try { fs = execFileSync('findmnt', ['-n', '-o', 'FSTYPE', '-T', tmpdir()], { encoding: 'utf8' }).trim() } catch { /* not important */ }
  return `${availableParallelism()} × ${model}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM, Linux ${release()}, Node ${process.version}${fs === '' ? '' : `, ${tmpdir()} on ${fs}`}`
}

async function sleep (ms: number): Promise<void> { await new Promise(resolveSleep => setTimeout(resolveSleep, ms)) }

const f1 = (n: number): string => n.toFixed(1)
const f2 = (n: number): string => n.toFixed(2)

async function main (): Promise<void> {
  const argv = process.argv.slice(2)
  if (argv[0] === '--child-publish') {
    let key = ''
    for await (const d of process.stdin) key += (d as Buffer).toString()
    await publishChild(argv[1] as string, argv[2] as string, key)
    return
  }
  const o = parseArgs(argv)
  const dir = await mkdtemp(join(tmpdir(), 'deltamesh-bench-rescan-'))
  const cleanup = (): void => { if (o.keep) process.exit(130); void rm(dir, { recursive: true, force: true }).finally(() => process.exit(130)) }
  process.once('SIGINT', cleanup)
  process.once('SIGTERM', cleanup)
  try {
    const src = join(dir, 'src')
    const db = join(dir, 'db')
    const keyPem = generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }).toString()
    console.log(`machine: ${machine()}`)
    console.log(`generating ${o.files} files of 0..${o.maxSize} bytes under ${src} …`)
    let t = Date.now()
    const bytes = await generate(src, o)
    const genSeconds = (Date.now() - t) / 1000
    console.log(`  ${(bytes / 2 ** 20).toFixed(1)} MiB in ${f1(genSeconds)} s (${Math.round(o.files / genSeconds)} files/s)`)

    // Files changed within the last 2 s are not cached (their mtime tick may not be over). ctime moves with
    // any write and with utimes, so the only way out of the window is to let it pass.
    const newest = await lstat(join(src, pathOf(o.files - 1, o.perDir)))
    const wait = Math.max(0, Math.max(newest.mtimeMs, newest.ctimeMs) + RACY_WINDOW_MS + 100 - Date.now())
    if (wait > 0) { console.log(`waiting ${(wait / 1000).toFixed(1)} s for the racy-mtime window to pass`); await sleep(wait) }

    console.log('first publish (child process) …')
    const first = await runPublishChild(src, db, keyPem)
    console.log(`  ${first.files} files read and chunked in ${f2(first.seconds)} s, peak RSS ${f1(first.maxRssMiB)} MiB`)
    console.log('rescan: publish unchanged (child process) …')
    const rescan = await runPublishChild(src, db, keyPem)
    console.log(`  ${rescan.cachedFiles}/${rescan.files} from the scan cache, ${rescan.verifiedFiles} verified, ${rescan.filesRead} files read, ${f2(rescan.seconds)} s (CPU ${f2(rescan.cpuSeconds)} s), peak RSS ${f1(rescan.maxRssMiB)} MiB`)
    if (rescan.root !== first.root || rescan.seq !== first.seq + 1) throw new Error(`rescan gave root ${rescan.root} seq ${rescan.seq}; expected ${first.root} seq ${first.seq + 1}`)
    if (rescan.filesRead !== 0) console.log(`  NOTE: ${rescan.filesRead} files were read again on the rescan (expected 0)`)

    let rsync: RsyncFigures | undefined
    let rsyncNote = ''
    if (hasRsync()) {
      const copy = join(dir, 'copy')
      t = Date.now()
      execFileSync('cp', ['-a', `${src}/.`, copy])
      console.log(`identical copy for rsync made in ${f1((Date.now() - t) / 1000)} s; rsync -a --dry-run --stats …`)
      runRsync(src, copy) // warm the copy's inodes as the publish had the source's
      rsync = runRsync(src, copy)
      if (rsync.filesTransferred !== 0) rsyncNote = ` (rsync would transfer ${rsync.filesTransferred} files: copy not identical?)`
    } else {
      rsyncNote = 'rsync is not installed: comparison skipped (scripts/setup-debian.sh installs it)'
      console.log(rsyncNote)
    }

    const mib = first.bytes / 2 ** 20
    const rows: Array<[string, string, string, string]> = [
      ['first publish (read + chunk + hash + index)', f2(first.seconds), f1(first.maxRssMiB), `${Math.round(first.files / first.seconds)} files/s, ${f1(mib / first.seconds)} MiB/s`],
      ['rescan, unchanged (deltamesh publish)', f2(rescan.seconds), f1(rescan.maxRssMiB), `${Math.round(rescan.files / rescan.seconds)} files/s; ${rescan.filesRead} files read; same root, seq ${rescan.seq}`],
    ]
    if (rsync !== undefined) {
      rows.push(['rsync -a --dry-run --stats to an identical copy', f2(rsync.seconds), rsync.maxRssMiB === undefined ? 'n/a' : f1(rsync.maxRssMiB),
        `${Math.round(o.files / rsync.seconds)} files/s; ${rsync.filesTransferred ?? '?'} files to transfer${rsyncNote}`])
    }
    const table = [
      '| step | seconds | peak RSS (MiB) | notes |',
      '| --- | ---: | ---: | --- |',
      ...rows.map(r => `| ${r.join(' | ')} |`),
    ].join('\n')
    console.log(`\n${new Date().toISOString().slice(0, 10)}, ${machine()}`)
    console.log(`tree: ${o.files} files, ${o.files / o.perDir} leaf dirs, ${f1(mib)} MiB (0..${o.maxSize} B each), manifest ${f1(first.manifestBytes / 2 ** 20)} MiB; page cache warm`)
    console.log(`\n${table}\n`)
    if (rsync === undefined) console.log(rsyncNote)
  } finally {
    if (!o.keep) await rm(dir, { recursive: true, force: true })
    else console.log(`kept ${dir}`)
  }
}

main().catch((err: unknown) => {
  console.error(err)
  process.exitCode = 1
})
