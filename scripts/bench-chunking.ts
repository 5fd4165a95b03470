// Chunking benchmark: how close does chunk + SHA-256 get to SHA-256 alone, per algorithm, in one thread and
// through the worker pool? Run: npx tsx scripts/bench-chunking.ts [--size 1G] [--tree DIR]... [--tree-max 1G]
//   [--algorithms gear,rabin] [--threads N]; or compiled: node dist/scripts/bench-chunking.js (same options).
// The generated file is deterministic pseudo-random data in a temp dir, removed at the end (also on Ctrl-C).
import { createHash } from 'node:crypto'
import { createWriteStream, existsSync } from 'node:fs'
import { lstat, mkdtemp, open, readdir, rm } from 'node:fs/promises'
import { availableParallelism, loadavg, tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chunkFile, READ_BUFFER_BYTES } from '../agent/chunk/chunker.js'
import { DEFAULT_CHUNKING } from '../protocol/chunking.js'
import { ChunkerPool } from '../agent/chunk/pool.js'
import type { PlacedChunk } from '../agent/store/types.js'
import type { ChunkingAlgorithm, ChunkingParams } from '../protocol/manifest.js'

interface Options { size: number, trees: string[], treeMax: number, algorithms: ChunkingAlgorithm[], threads: number }

function parseSize (text: string): number {
  const m = /^(\d+(?:\.\d+)?)([kmgt]?)i?b?$/i.exec(text.trim())
  if (m === null) throw new Error(`not a size: ${text}`)
  const unit = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't']
  return Math.floor(Number(m[1]) * unit)
}

function parseArgs (argv: string[]): Options {
  const repo = resolve(dirname(fileURLToPath(import.meta.url)), import.meta.url.includes('/dist/') ? '../..' : '..')
  const o: Options = { size: 2 ** 30, trees: [], treeMax: 2 ** 30, algorithms: ['gear', 'rabin'], threads: availableParallelism() }
  for (let i = 0; i < argv.length; i++) {
    const value = (): string => { const v = argv[++i]; if (v === undefined) throw new Error(`${argv[i - 1]} needs a value`); return v }
    switch (argv[i]) {
      case '--size': o.size = parseSize(value()); break
      case '--tree': o.trees.push(resolve(value())); break
      case '--tree-max': o.treeMax = parseSize(value()); break
      case '--algorithms': o.algorithms = value().split(',') as ChunkingAlgorithm[]; break
      case '--threads': o.threads = Number(value()); break
      case '--help': console.log('options: --size 1G --tree DIR (repeatable) --tree-max 1G --algorithms gear,rabin --threads N'); process.exit(0)
      default: throw new Error(`unknown option ${argv[i]}`)
    }
  }
  if (o.trees.length === 0) o.trees = [join(repo, 'node_modules'), '/usr/lib'].filter(p => existsSync(p))
  return o
}

/** Deterministic pseudo-random file (xorshift32), written in 4 MiB pieces so memory stays flat. */
async function writePseudoRandom (path: string, size: number): Promise<void> {
  const out = createWriteStream(path)
  let s = 0x2545f491
  for (let written = 0; written < size;) {
    const n = Math.min(4 * 2 ** 20, size - written)
    const piece = Buffer.allocUnsafe(Math.ceil(n / 4) * 4)
    const words = new Uint32Array(piece.buffer, piece.byteOffset, piece.length / 4)
    for (let i = 0; i < words.length; i++) { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; words[i] = s }
    if (!out.write(piece.subarray(0, n))) await new Promise<void>(r => out.once('drain', () => r()))
    written += n
  }
  await new Promise<void>((res, rej) => out.end((err?: Error | null) => err ? rej(err) : res()))
}

/** Regular files under root in walk order until `max` bytes (symlinks and unreadable entries skipped). */
async function listTree (root: string, max: number): Promise<{ files: string[], bytes: number }> {
  const files: string[] = []
  let bytes = 0
  const walk = async (dir: string): Promise<void> => {
    let entries
    try { entries = await readdir(dir, { withFileTypes: true }) } catch { return } // unreadable dir: not part of the sample
    entries.sort((a, b) => a.name < b.name ? -1 : 1)
    for (const e of entries) {
      if (bytes >= max) return
      const p = join(dir, e.name)
      if (e.isDirectory()) await walk(p)
      else if (e.isFile()) {
        const st = await lstat(p)
        try { await (await open(p, 'r')).close() } catch { continue } // unreadable file: skip
        files.push(p); bytes += st.size
      }
    }
  }
  await walk(root)
  return { files, bytes }
}

/** The ceiling: read the same bytes with the same buffer size and SHA-256 them, nothing else. */
async function hashOnly (path: string): Promise<void> {
  const buffer = Buffer.allocUnsafe(READ_BUFFER_BYTES)
  const h = createHash('sha256')
  const fh = await open(path, 'r')
  try {
    for (let pos = 0; ;) {
      const { bytesRead } = await fh.read(buffer, 0, buffer.length, pos)
      if (bytesRead === 0) break
      h.update(buffer.subarray(0, bytesRead)); pos += bytesRead
    }
  } finally { await fh.close() }
  h.digest()
}

/** Runs fn over the files with at most `width` in flight, results in order. */
async function mapBounded<T> (files: string[], width: number, fn: (f: string) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(files.length)
  let next = 0
  await Promise.all(Array.from({ length: Math.min(width, files.length) }, async () => {
    while (next < files.length) { const i = next++; out[i] = await fn(files[i]!) }
  }))
  return out
}

const IN_FLIGHT = 4

interface Row { data: string, method: string, mbps: number, ratio: number, cpuMbps: number, chunks?: number, avgKiB?: number }

// CPU seconds of the whole process (all threads) alongside wall time: on a shared machine other processes
// steal cores, and MB per CPU-second still tells how much work each method costs.
let lastCpuSeconds = 0

async function time<T> (fn: () => Promise<T>): Promise<[T, number]> {
  const t = process.hrtime.bigint()
  const cpu = process.cpuUsage()
  const r = await fn()
  const used = process.cpuUsage(cpu)
  lastCpuSeconds = (used.user + used.system) / 1e6
  return [r, Number(process.hrtime.bigint() - t) / 1e9]
}

async function measure (data: string, files: string[], bytes: number, o: Options, pool: ChunkerPool, rows: Row[]): Promise<void> {
  const mb = bytes / 1e6
  // Every single-thread measurement keeps IN_FLIGHT files open at once, as the scanner does, so that small
  // files measure CPU rather than the latency of open/read/close.
  await mapBounded(files, IN_FLIGHT, async f => await hashOnly(f)) // warm the page cache: we measure CPU, not the disk
  const [, ceilingS] = await time(async () => await mapBounded(files, IN_FLIGHT, async f => await hashOnly(f)))
  const ceiling = mb / ceilingS
  rows.push({ data, method: 'sha256 only, 1 thread (ceiling)', mbps: ceiling, ratio: 1, cpuMbps: mb / lastCpuSeconds })
  const stats = (lists: PlacedChunk[][]): { chunks: number, avgKiB: number } => {
    const chunks = lists.reduce((n, l) => n + l.length, 0)
    return { chunks, avgKiB: chunks === 0 ? 0 : bytes / chunks / 1024 }
  }
  for (const algorithm of o.algorithms) {
    const params: ChunkingParams = { ...DEFAULT_CHUNKING, algorithm }
    const label = `${algorithm}${algorithm === DEFAULT_CHUNKING.algorithm ? ' (default)' : ''}`
    const [single, singleS] = await time(async () => await mapBounded(files, IN_FLIGHT, async f => await chunkFile(f, params)))
    rows.push({ data, method: `${label} chunk+sha256, 1 thread`, mbps: mb / singleS, ratio: mb / singleS / ceiling, cpuMbps: mb / lastCpuSeconds, ...stats(single) })
    const [pooled, poolS] = await time(async () => await mapBounded(files, pool.size * 4, async f => await pool.chunkFile(f, params)))
    rows.push({ data, method: `${label} chunk+sha256, pool ×${pool.size}`, mbps: mb / poolS, ratio: mb / poolS / ceiling, cpuMbps: mb / lastCpuSeconds, ...stats(pooled) })
    if (single.some((l, i) => l.length !== pooled[i]!.length || l.some((c, j) => c.size !== pooled[i]![j]!.size))) throw new Error(`${data}: pool and single thread disagree (${algorithm})`)
  }
}

function printTable (rows: Row[]): void {
  const header = ['data', 'method', 'MB/s', '% of ceiling', 'MB/CPU-s', 'chunks', 'avg KiB']
  const body = rows.map(r => [r.data, r.method, r.mbps.toFixed(0), `${(100 * r.ratio).toFixed(0)} %`, r.cpuMbps.toFixed(0), r.chunks?.toString() ?? '', r.avgKiB?.toFixed(1) ?? ''])
  const widths = header.map((h, i) => Math.max(h.length, ...body.map(b => b[i]!.length)))
  const line = (cells: string[]): string => `| ${cells.map((c, i) => i >= 2 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)).join(' | ')} |`
  console.log(line(header))
  console.log(`|${widths.map((w, i) => (i >= 2 ? '-'.repeat(w + 1) + ':' : '-'.repeat(w + 2))).join('|')}|`)
  for (const b of body) console.log(line(b))
}

async function main (): Promise<void> {
  const o = parseArgs(process.argv.slice(2))
  const dir = await mkdtemp(join(tmpdir(), 'deltamesh-bench-'))
  const cleanup = (): void => { void rm(dir, { recursive: true, force: true }).finally(() => process.exit(130)) }
  process.once('SIGINT', cleanup)
  process.once('SIGTERM', cleanup)
  const pool = new ChunkerPool({ size: o.threads })
  const rows: Row[] = []
  try {
    console.log(`load average ${loadavg().map(l => l.toFixed(2)).join(' ')} (other processes compete for the cores)`)
    console.log(`node ${process.version}, ${availableParallelism()} cores, pool ${pool.size} workers, read buffer ${READ_BUFFER_BYTES / 2 ** 20} MiB, params ${JSON.stringify(DEFAULT_CHUNKING)}`)
    const file = join(dir, 'random.bin')
    await writePseudoRandom(file, o.size)
    const label = `random ${(o.size / 2 ** 20).toFixed(0)} MiB`
    console.error(`measuring ${label}…`)
    await measure(label, [file], o.size, o, pool, rows)
    await rm(file)
    for (const tree of o.trees) {
      const { files, bytes } = await listTree(tree, o.treeMax)
      if (files.length === 0) continue
      const name = `${tree} (${files.length} files, ${(bytes / 2 ** 20).toFixed(0)} MiB)`
      console.error(`measuring ${name}…`)
      await measure(name, files, bytes, o, pool, rows)
    }
    printTable(rows)
    console.log(`load average at the end ${loadavg().map(l => l.toFixed(2)).join(' ')}`)
  } finally {
    await pool.close()
    await rm(dir, { recursive: true, force: true })
  }
}

main().catch(err => { console.error(err); process.exitCode = 1 })
