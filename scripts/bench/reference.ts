// What a corpus round compares with, which depends on the cached corpus and the chunk size alone: v2's
// description (every mirror is checked against it) and the lower bound (v2's distinct chunks absent from v1,
// plain and compressed as the chunk server sends them). On the 200,000-file corpus computing it took ~4 min
// (describing v2, and `deltamesh manifest --entries` of v1 and of v2), so it is kept next to the corpus, in
// `<v2>.reference-<chunk size>.json`, and reused while its key holds: the format below, the chunk size and
// its parameters, a fingerprint of what the chunker cuts, and both versions' `.done` markers (content and
// mtime: a rebuilt corpus has new markers).
import { createHash } from 'node:crypto'
import { readFile, rename, stat, writeFile } from 'node:fs/promises'
import { isDeepStrictEqual } from 'node:util'
import { chunkBytes } from '../../agent/chunk/chunker.js'
import { CHUNK_SIZES, type ChunkSizeName } from '../../protocol/chunking.js'
import { pseudoRandomBytes } from '../../agent/demo/tree-gen.js'
import { toHex } from '../../protocol/chunk-id.js'
import { compressedBytes } from './chunk-sizes.js'
import { describeTreeInParallel } from './describe-tree.js'
import { chunkPlaces } from './chunk-set.js'

/** Bump when what is stored, or how it is computed, changes. */
const FORMAT = 1

export interface CorpusReference {
  /** describeTree's description of v2. */
  v2: Record<string, string>
  /** Bytes of v2's distinct chunks that v1 does not have. */
  delta: number
  /** `delta` compressed as the wire would carry it. */
  deltaCompressed: number
  /** Bytes of v2's distinct chunks. */
  v2Bytes: number
}

interface Stamp { text: string, mtimeMs: number }
interface ReferenceKey { format: number, chunkSize: string, params: unknown, chunker: string, v1: Stamp, v2: Stamp }

async function stampOf (marker: string): Promise<Stamp | undefined> {
  try {
    return { text: await readFile(marker, 'utf8'), mtimeMs: (await stat(marker)).mtimeMs }
  } catch { return undefined }
}

/** The chunk ids of 2 MiB of fixed pseudo-random bytes: another chunker (cut points or ids) gives another fingerprint. */
function chunkerFingerprint (chunkSize: ChunkSizeName): string {
  const chunks = chunkBytes(pseudoRandomBytes('deltamesh-bench-reference', 2 * 1024 * 1024), CHUNK_SIZES[chunkSize])
  return createHash('sha256').update(chunks.map(c => `${toHex(c.id)}:${c.size}`).join(',')).digest('hex')
}

async function computeReference (v1: string, v2: string, chunkSize: ChunkSizeName): Promise<CorpusReference> {
  const description = await describeTreeInParallel(v2)
  const v1Chunks = new Set((await chunkPlaces(v1, chunkSize, 1_800_000)).keys())
  const v2Chunks = await chunkPlaces(v2, chunkSize, 1_800_000)
  const absent = [...v2Chunks].filter(([id]) => !v1Chunks.has(id)).map(([, place]) => place)
  return {
    v2: description,
    delta: absent.reduce((n, p) => n + p.size, 0),
    // the bound: those bytes compressed (as the chunk server batches them: brotli-3, 256 KiB)
    deltaCompressed: await compressedBytes(absent),
    v2Bytes: [...v2Chunks.values()].reduce((a, b) => a + b.size, 0),
  }
}

function isReference (x: unknown): x is CorpusReference {
  if (typeof x !== 'object' || x === null) return false
  const r = x as Record<string, unknown>
  const numbers = [r.delta, r.deltaCompressed, r.v2Bytes].every(n => typeof n === 'number' && Number.isFinite(n))
  return numbers && typeof r.v2 === 'object' && r.v2 !== null && Object.values(r.v2).every(v => typeof v === 'string')
}

async function readCached (file: string, key: ReferenceKey): Promise<CorpusReference | undefined> {
  let stored: unknown
  try { stored = JSON.parse(await readFile(file, 'utf8')) } catch { return undefined }
  if (typeof stored !== 'object' || stored === null) return undefined
  const { key: storedKey, reference } = stored as { key?: unknown, reference?: unknown }
  return isDeepStrictEqual(storedKey, key) && isReference(reference) ? reference : undefined
}

/**
 * v2's description and the lower bound for v1 → v2 at `chunkSize`: from the file next to v2 when its key
 * matches, else computed (and stored; a cache that cannot be written only costs the next run the time).
 * `whence` says which, for the log.
 */
export async function corpusReference (v1: string, v2: string, chunkSize: ChunkSizeName): Promise<{ reference: CorpusReference, whence: string }> {
  const [s1, s2] = await Promise.all([stampOf(`${v1}.done`), stampOf(`${v2}.done`)])
  if (s1 === undefined || s2 === undefined) return { reference: await computeReference(v1, v2, chunkSize), whence: 'computed (no .done markers: not cached)' }
  const key: ReferenceKey = { format: FORMAT, chunkSize, params: { ...CHUNK_SIZES[chunkSize] }, chunker: chunkerFingerprint(chunkSize), v1: s1, v2: s2 }
  const file = `${v2}.reference-${chunkSize}.json`
  const cached = await readCached(file, key)
  if (cached !== undefined) return { reference: cached, whence: `read from ${file}` }
  const reference = await computeReference(v1, v2, chunkSize)
  try {
    await writeFile(`${file}.tmp`, JSON.stringify({ key, reference }))
    await rename(`${file}.tmp`, file)
  } catch (err) {
    return { reference, whence: `computed; not cached (${err instanceof Error ? err.message : String(err)})` }
  }
  return { reference, whence: `computed, cached in ${file}` }
}
