import { createHash, type Hash } from 'node:crypto'
import { open } from 'node:fs/promises'
import type { ChunkingParams } from '../../protocol/manifest.js'
import { HOLE_CHUNK_ID, validateChunkingParams } from '../../protocol/manifest.js'
import type { PlacedChunk } from '../store/types.js'
import type { Cutter } from './cutter.js'
import { GearCutter } from './gear.js'
import { RabinCutter } from './rabin.js'
import { fsPath } from '../../protocol/paths.js'
import { feedZeros, isAllZero } from './zeros.js'

export type { Cutter } from './cutter.js'


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
 * With `sparse` (a file with fewer blocks than its size), a chunk whose bytes are all zero is a hole
 * (HOLE_CHUNK_ID): its zeros are held back from the hash until a byte that is not zero arrives, so a hole
 * costs a zero test and never a SHA-256.
 */
export class ChunkHasher {
  readonly chunks: PlacedChunk[] = []
  private readonly cutter: Cutter
  private hash: Hash = createHash('sha256')
  private chunkStart: number
  /** Bytes of the current chunk already fed (to `hash`, or held back as zeros). */
  private pending = 0
  private readonly sparse: boolean
  /** Sparse only: every byte of the current chunk so far is zero, and none was hashed. */
  private allZero: boolean

  constructor (params: ChunkingParams, start = 0, options: { sparse?: boolean } = {}) {
    this.cutter = createCutter(params)
    this.chunkStart = start
    this.sparse = options.sparse === true
    this.allZero = this.sparse
  }

  push (bytes: Uint8Array): void {
    let p = 0
    for (const size of this.cutter.push(bytes)) {
      const take = size - this.pending
      this.feed(bytes.subarray(p, p + take))
      p += take
      this.emit(size)
    }
    if (p < bytes.length) this.feed(bytes.subarray(p))
  }

  /** Ends the stream; `keepTail` false drops the trailing partial chunk (a range that stops before the end of the file). */
  finish (keepTail = true): PlacedChunk[] {
    const rest = this.cutter.finish()
    if (rest > 0 && keepTail) this.emit(rest)
    return this.chunks
  }

  private feed (part: Uint8Array): void {
    if (this.allZero) {
      if (isAllZero(part)) { this.pending += part.byteLength; return }
      // data after zeros: the chunk is no hole, and the zeros held back are hashed first
      feedZeros(b => this.hash.update(b), this.pending)
      this.allZero = false
    }
    this.hash.update(part)
    this.pending += part.byteLength
  }

  private emit (size: number): void {
    if (this.allZero) {
      // nothing was hashed: the hash object serves the next chunk
      this.chunks.push({ id: Buffer.from(HOLE_CHUNK_ID), offset: this.chunkStart, size })
    } else {
      this.chunks.push({ id: this.hash.digest(), offset: this.chunkStart, size })
      this.hash = createHash('sha256')
    }
    this.chunkStart += size
    this.pending = 0
    this.allZero = this.sparse
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
  /** The file is sparse at the source (fewer blocks than its size): its all-zero chunks are holes (ChunkHasher). */
  sparse?: boolean
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
  const hasher = new ChunkHasher(params, start, { sparse: options.sparse })
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
