import { createHash, type Hash } from 'node:crypto'
import { open } from 'node:fs/promises'
import type { ChunkingParams } from '../../protocol/manifest.js'
import { validateChunkingParams } from '../../protocol/manifest.js'
import type { PlacedChunk } from '../store/types.js'
import type { Cutter } from './cutter.js'
import { GearCutter } from './gear.js'
import { RabinCutter } from './rabin.js'
import { fsPath } from '../../protocol/paths.js'

export type { Cutter } from './cutter.js'

/**
 * Default chunking of new trees, chosen by measurement (2-core VM, Node 20; scripts/bench-chunking.ts and a
 * 64 MiB sweep over random data and over /usr/lib binaries):
 *
 * Algorithm: gear. Cutting alone runs at 500-900 MB/s for gear and 55-90 MB/s for rabin-wasm (which also copies
 * every buffer into wasm memory), so rabin makes chunk+SHA-256 reach only 7-10 % of the SHA-256-only ceiling in
 * one thread and cannot get near it with two; gear gets ~30 % in one thread and ≥ 50 % through the pool.
 * Boundary stability is the same: 100 bytes inserted near the start of 64 MiB change 1 chunk of ~1300 with
 * either algorithm, on random and on real data (test/unit/chunker.test.ts asserts ≤ 3). Gear's normalized
 * chunking also gives a much tighter size distribution (median ≈ mean) and almost never hits maxSize.
 *
 * Sizes: the design asks for a 64 KiB average with min 16 KiB and max 256 KiB, but both algorithms average
 * about minSize + 2^avgBits, so with min 16 KiB no power of two lands on 64 KiB. Measured averages (random / real):
 *   gear  bits 15 min 16 KiB: 50.8 / 55.3 KiB (median 51.7 / 52.6)   <- chosen
 *   gear  bits 16 min 16 KiB: 85.7 / 93.0 KiB
 *   gear  bits 15 min 32 KiB: 67.0 / 71.7 KiB (closest to 64 KiB, but min = avg/2 instead of FastCDC's avg/4)
 *   rabin bits 15 min 16 KiB: 47.3 / 38.7 KiB (median 37.9 / 25.4: low-entropy data cuts early and often)
 *   rabin bits 16 min 16 KiB: 79.4 / 51.8 KiB
 * We keep the designed min and max and take the smaller average: finer deduplication for 36 bytes of manifest
 * per ~52 KiB (0.07 %). maxSize was reached by 2 chunks of 1186 on real data (long zero runs only).
 */
export const DEFAULT_CHUNKING: ChunkingParams = Object.freeze({
  algorithm: 'gear',
  avgBits: 15,
  minSize: 16 * 1024,
  maxSize: 256 * 1024,
})

/** Read size for files: large enough that syscalls and per-read hashing overhead vanish, small enough to stay cache-friendly. */
export const READ_BUFFER_BYTES = 1024 * 1024

// Read buffers are reused across files: allocating 2 MiB per file made chunking a tree of small files
// (node_modules: 9 k files, 16 KiB median) several times slower than hashing it, from allocation and GC alone.
const spareBuffers: Buffer[] = []
const MAX_SPARE_BUFFERS = 8

/** A read buffer of `size` bytes from the spares (or a new one); hand it back with giveBack when done. */
export function takeBuffer (size: number): Buffer {
  const i = spareBuffers.findIndex(b => b.length === size)
  return i >= 0 ? spareBuffers.splice(i, 1)[0]! : Buffer.allocUnsafe(size)
}

export function giveBack (buffer: Buffer): void {
  if (spareBuffers.length < MAX_SPARE_BUFFERS) spareBuffers.push(buffer)
}

/** A new cutter at the start of a stream (one per file: cutters are stateful). */
export function createCutter (params: ChunkingParams): Cutter {
  validateChunkingParams(params)
  return params.algorithm === 'gear' ? new GearCutter(params) : new RabinCutter(params)
}

/**
 * Cuts a stream into chunks and hashes each chunk incrementally, across push boundaries, so neither a chunk
 * nor the stream is ever held whole. `start` is the stream offset of the first byte pushed.
 */
export class ChunkHasher {
  readonly chunks: PlacedChunk[] = []
  private readonly cutter: Cutter
  private hash: Hash = createHash('sha256')
  private chunkStart: number
  /** Bytes of the current chunk already fed to `hash`. */
  private pending = 0

  constructor (params: ChunkingParams, start = 0) {
    this.cutter = createCutter(params)
    this.chunkStart = start
  }

  push (bytes: Uint8Array): void {
    let p = 0
    for (const size of this.cutter.push(bytes)) {
      const take = size - this.pending
      this.hash.update(bytes.subarray(p, p + take))
      p += take
      this.emit(size)
    }
    if (p < bytes.length) {
      this.hash.update(bytes.subarray(p))
      this.pending += bytes.length - p
    }
  }

  /** Ends the stream; `keepTail` false drops the trailing partial chunk (a range that stops before the end of the file). */
  finish (keepTail = true): PlacedChunk[] {
    const rest = this.cutter.finish()
    if (rest > 0 && keepTail) this.emit(rest)
    return this.chunks
  }

  private emit (size: number): void {
    this.chunks.push({ id: this.hash.digest(), offset: this.chunkStart, size })
    this.chunkStart += size
    this.hash = createHash('sha256')
    this.pending = 0
  }
}

/** Chunks in-memory bytes (the encoded manifest, small blobs). */
export function chunkBytes (bytes: Uint8Array, params: ChunkingParams): PlacedChunk[] {
  const hasher = new ChunkHasher(params)
  hasher.push(bytes)
  return hasher.finish()
}

export interface ChunkFileOptions {
  signal?: AbortSignal
  /**
   * Only the bytes [start, end) of the file, cut as if a chunk began at `start`. The trailing partial chunk is
   * kept only if the range reaches the end of the file. Used to split one large file across threads.
   */
  start?: number
  end?: number
  readBufferBytes?: number
}

/**
 * Streams a file through the chunker with bounded memory (two read buffers, so the next read runs in the
 * thread pool while this one is cut and hashed). Reads until end of file, so the result always describes
 * the bytes that were actually read; the caller compares size/mtime before and after if it cares about races.
 */
export async function chunkFile (path: string, params: ChunkingParams, options: ChunkFileOptions = {}): Promise<PlacedChunk[]> {
  const { signal } = options
  signal?.throwIfAborted()
  const start = options.start ?? 0
  const end = options.end ?? Number.POSITIVE_INFINITY
  const size = options.readBufferBytes ?? READ_BUFFER_BYTES
  const hasher = new ChunkHasher(params, start)
  const handle = await open(fsPath(path), 'r')
  const buffers = [takeBuffer(size), takeBuffer(size)] as const
  let pending: Promise<number> | undefined
  let reachedEof = false
  try {
    let position = start
    const readInto = (buffer: Buffer): Promise<number> =>
      handle.read(buffer, 0, Math.min(size, end - position), position).then(r => r.bytesRead)
    if (position < end) pending = readInto(buffers[0])
    let which = 0
    while (pending !== undefined) {
      const bytesRead = await pending
      pending = undefined
      signal?.throwIfAborted()
      if (bytesRead === 0) { reachedEof = true; break }
      const current = buffers[which]!
      position += bytesRead
      which ^= 1
      if (position < end) pending = readInto(buffers[which]!)
      hasher.push(current.subarray(0, bytesRead))
    }
    if (!reachedEof && options.end !== undefined) reachedEof = position >= (await handle.stat()).size
    return hasher.finish(reachedEof || options.end === undefined)
  } finally {
    // A read still in flight writes into our buffer: let it land before the descriptor is closed.
    if (pending !== undefined) await pending.catch(() => 0)
    giveBack(buffers[0])
    giveBack(buffers[1])
    await handle.close()
  }
}
