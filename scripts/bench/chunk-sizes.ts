// Chunk-size policy study (issue 6): for each bench corpus (v1 → v2, as `npm run bench` builds them) and each
// chunking setting, what a subscriber holding v1 must fetch of v2 as plain chunks: the bytes of v2's distinct
// chunks absent from v1, the same compressed as the wire would (brotli-3 over 256 KiB batches, a batch that does
// not shrink 5 % sent plain), the count of those chunks (each costs a WANT entry and a BLOCK header), and the
// manifest: its size and how much of it is new (manifest chunks absent from v1's manifest).
// Run after `npm run bench -- --quick` built the corpora: node dist/scripts/bench/chunk-sizes.js [--scale quick|full]
//   [--corpus repo,iso,small,src]
import '../../agent/polyfill.js'
import { existsSync } from 'node:fs'
import { open } from 'node:fs/promises'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { brotliCompressSync, constants } from 'node:zlib'
import { chunkBytes } from '../../agent/chunk/chunker.js'
import { DEFAULT_CHUNKING } from '../../protocol/chunking.js'
import { ChunkerPool } from '../../agent/chunk/pool.js'
import { scanTree } from '../../agent/scan/scanner.js'
import { toHex } from '../../protocol/chunk-id.js'
import { ManifestWriter, type ChunkingParams } from '../../protocol/manifest.js'
import { cacheDir, type Scale } from './corpus.js'

/** The settings compared: FastCDC proportions (min = ¼ of the normal point's distance) around 16, 32 and 64 KiB, and the default. */
export const SETTINGS: Array<{ label: string, params: ChunkingParams }> = [
  { label: '~16 KiB (min 8 KiB, bits 13)', params: { algorithm: 'gear', avgBits: 13, minSize: 8 * 1024, maxSize: 256 * 1024 } },
  { label: '~32 KiB (min 16 KiB, bits 14)', params: { algorithm: 'gear', avgBits: 14, minSize: 16 * 1024, maxSize: 256 * 1024 } },
  { label: '~52 KiB (min 16 KiB, bits 15)', params: { algorithm: 'gear', avgBits: 15, minSize: 16 * 1024, maxSize: 256 * 1024 } },
  { label: '~64 KiB (min 32 KiB, bits 15)', params: { algorithm: 'gear', avgBits: 15, minSize: 32 * 1024, maxSize: 256 * 1024 } },
]

/** As the chunk server batches (agent/net/compression-policy.ts): brotli-3, window 2^20, 256 KiB raw per batch. */
const BATCH_BYTES = 256 * 1024
const MIN_SAVING = 0.05

interface TreeChunks { chunks: Map<string, { size: number, path: string, offset: number }>, count: number, bytes: number, manifest: Uint8Array, manifestChunks: Set<string> }

async function chunkTree (root: string, params: ChunkingParams, pool: ChunkerPool): Promise<TreeChunks> {
  const writer = new ManifestWriter({ chunking: params })
  const parts = [writer.start()]
  const chunks = new Map<string, { size: number, path: string, offset: number }>()
  let count = 0
  let bytes = 0
  for await (const { entry } of scanTree(root, { chunkFile: async (p, s, size) => await pool.chunkFile(p, params, s, size) })) {
    parts.push(writer.write(entry))
    if (entry.type !== 'file') continue
    let offset = 0
    for (const c of entry.chunks) {
      chunks.set(toHex(c.id), { size: c.size, path: join(root, entry.path), offset })
      offset += c.size
      count++
    }
    bytes += entry.size
  }
  const manifest = Buffer.concat(parts)
  return { chunks, count, bytes, manifest, manifestChunks: new Set(chunkBytes(manifest, params).map(c => toHex(c.id))) }
}

/** Wire bytes of these chunks' payload when batched and compressed the way the chunk server does it. */
export async function compressedBytes (list: Array<{ size: number, path: string, offset: number }>): Promise<number> {
  let total = 0
  let batch: Buffer[] = []
  let raw = 0
  const flush = (): void => {
    if (raw === 0) return
    const z = brotliCompressSync(Buffer.concat(batch), { params: { [constants.BROTLI_PARAM_QUALITY]: 3, [constants.BROTLI_PARAM_LGWIN]: 20 } })
    total += z.byteLength <= raw * (1 - MIN_SAVING) ? z.byteLength : raw
    batch = []
    raw = 0
  }
  for (const c of list) {
    const fh = await open(c.path, 'r')
    try {
      const b = Buffer.allocUnsafe(c.size)
      await fh.read(b, 0, c.size, c.offset)
      batch.push(b)
    } finally { await fh.close() }
    raw += c.size
    if (raw >= BATCH_BYTES) flush()
  }
  flush()
  return total
}

export interface SizeRow { corpus: string, label: string, avgKiB: number, v2Chunks: number, absentChunks: number, absentBytes: number, absentCompressed: number, manifestBytes: number, manifestNewBytes: number }

export async function studyCorpus (corpus: string, v1: string, v2: string, pool: ChunkerPool): Promise<SizeRow[]> {
  const rows: SizeRow[] = []
  for (const { label, params } of SETTINGS) {
    const a = await chunkTree(v1, params, pool)
    const b = await chunkTree(v2, params, pool)
    const absent = [...b.chunks.entries()].filter(([id]) => !a.chunks.has(id)).map(([, c]) => c)
    const manifestChunks = chunkBytes(b.manifest, params)
    rows.push({
      corpus, label, avgKiB: b.bytes / Math.max(1, b.count) / 1024, v2Chunks: b.count, absentChunks: absent.length,
      absentBytes: absent.reduce((n, c) => n + c.size, 0), absentCompressed: await compressedBytes(absent),
      manifestBytes: b.manifest.byteLength,
      manifestNewBytes: manifestChunks.filter(c => !a.manifestChunks.has(toHex(c.id))).reduce((n, c) => n + c.size, 0),
    })
  }
  return rows
}

export function renderSizes (rows: SizeRow[]): string {
  const mb = (n: number): string => (n / 1e6).toFixed(n < 1e7 ? 2 : 1)
  return [
    '| corpus | chunking | avg chunk KiB (v2) | v2 chunks | absent from v1: chunks | … bytes, MB | … brotli-3 batches, MB | manifest, MB | … new in v2, MB | absent + new manifest, compressed, MB |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map(r => `| ${r.corpus} | ${r.label}${r.label.includes(`bits ${DEFAULT_CHUNKING.avgBits})`) && r.label.includes(`min ${DEFAULT_CHUNKING.minSize / 1024} KiB`) ? ' (default)' : ''} | ${r.avgKiB.toFixed(1)} | ${r.v2Chunks} | ${r.absentChunks} | ${mb(r.absentBytes)} | ${mb(r.absentCompressed)} | ${mb(r.manifestBytes)} | ${mb(r.manifestNewBytes)} | ${mb(r.absentCompressed + r.manifestNewBytes)} |`),
  ].join('\n')
}

async function main (): Promise<void> {
  const argv = process.argv.slice(2)
  let scale: Scale = 'quick'
  let corpora = ['repo', 'iso', 'small', 'src']
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--scale') scale = argv[++i] as Scale
    else if (argv[i] === '--corpus') corpora = (argv[++i] ?? '').split(',')
    else throw new Error(`unknown option ${argv[i]} (--scale quick|full, --corpus LIST)`)
  }
  const base = cacheDir(scale)
  const dirs: Record<string, [string, string]> = {
    repo: ['repo-v1', 'repo-v2'], iso: ['iso-v1', 'iso-v2'], small: [`small-${scale === 'full' ? 200_000 : 5_000}-v1`, `small-${scale === 'full' ? 200_000 : 5_000}-v2`], src: ['src-v1', 'src-v2'],
  }
  const pool = new ChunkerPool({ size: availableParallelism() })
  const rows: SizeRow[] = []
  try {
    for (const c of corpora) {
      const [d1, d2] = (dirs[c] ?? []).map(d => join(base, d))
      if (d1 === undefined || d2 === undefined || !existsSync(`${d1}.done`) || !existsSync(`${d2}.done`)) { console.error(`${c}: not built in ${base} (npm run bench -- --corpus ${c} builds it)`); continue }
      console.error(`${c}: chunking v1 and v2 with ${SETTINGS.length} settings`)
      rows.push(...await studyCorpus(c, d1, d2, pool))
    }
  } finally {
    await pool.close()
  }
  console.log(renderSizes(rows))
}

if (process.argv[1]?.endsWith('chunk-sizes.js') === true) main().catch((err: unknown) => { console.error(err); process.exitCode = 1 })
