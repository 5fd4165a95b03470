// Which chunks a chunk server sends compressed, and how. Decided by measuring the bytes, never by file
// name: a sample of each chunk is judged once and the verdict is remembered per chunk id, so serving the
// same chunk to N subscribers tests it once. A sample whose byte histogram is already at random level
// (compressed payloads) is judged by that alone (entropy.ts); the others are compressed to see (brotli
// quality 1). Chunks that pass go into one BLOCKS frame with the chunks ready after them, so brotli's
// context spans the batch; a batch that still does not shrink by 5 % goes out as plain BLOCK frames and
// its chunks are remembered as incompressible.
import { brotliCompressSync, constants } from 'node:zlib'
import { compressBatch } from '../../protocol/batch-codec.js'
import { toHex, type ChunkId } from '../../protocol/chunk-id.js'
import { MAX_BATCH_RAW_BYTES, MAX_BLOCKS_PER_BATCH } from '../../protocol/wire-limits.js'
import { looksIncompressible } from '../chunk/entropy.js'
import { BoundedMap } from '../core/bounded-map.js'
import type { BlockMessage, BlocksMessage } from '../../protocol/messages.js'

/** Bytes of a chunk compressed to judge it: enough to see structure, a fraction of a chunk's cost. */
const SAMPLE_BYTES = 16 * 1024
/**
 * The sample's histogram counts about this many of its bytes (every 4th of 16 KiB): enough to tell random from
 * structured. A smaller sample counts every byte (as before): 512 counted bytes of 2 KiB are too few.
 */
const COUNTED_BYTES = 4096
/** A sample must shrink below this ratio for its chunk to be worth compressing. */
const SAMPLE_RATIO = 0.9
/** A batch must shrink below this ratio to be sent compressed (else the receiver's inflate is wasted). */
const BATCH_RATIO = 0.95
/** Verdicts remembered (oldest dropped first): 64 k ids × ~100 B ≈ 6 MiB, a few versions' worth of new chunks. */
const MAX_VERDICTS = 65_536

export interface CompressionPolicyInit { batchBytes: number }

export interface CompressionStats {
  /** Raw chunk bytes that went into BLOCKS frames, and those frames' compressed payload bytes. */
  batchedRaw: number
  batchedWire: number
  batches: number
  /** Chunks judged incompressible by their sample, or by a batch that did not shrink. */
  incompressibleChunks: number
}

export class CompressionPolicy {
  readonly stats: CompressionStats = { batchedRaw: 0, batchedWire: 0, batches: 0, incompressibleChunks: 0 }
  private readonly verdicts = new BoundedMap<string, boolean>(MAX_VERDICTS)
  private readonly batchBytes: number

  constructor (init: CompressionPolicyInit) {
    this.batchBytes = Math.min(init.batchBytes, MAX_BATCH_RAW_BYTES)
  }

  /** Whether `bytes` (the chunk `id`) should go into a compressed batch. */
  worthTrying (id: ChunkId, bytes: Uint8Array): boolean {
    if (bytes.byteLength === 0 || bytes.byteLength > this.batchBytes) return false
    const key = toHex(id)
    const known = this.verdicts.get(key)
    if (known !== undefined) return known
    const start = Math.max(0, Math.floor((bytes.byteLength - SAMPLE_BYTES) / 2))
    const sample = bytes.subarray(start, start + SAMPLE_BYTES)
    // A chunk no larger than a sample is not compressed on trial: its batch is, and a batch that does not
    // shrink marks its chunks incompressible (pack) — the trial would only have compressed the chunk twice.
    const verdict = !looksIncompressible(sample, Math.max(1, Math.floor(sample.byteLength / COUNTED_BYTES))) && (sample.byteLength === bytes.byteLength ||
      brotliCompressSync(sample, { params: { [constants.BROTLI_PARAM_QUALITY]: 1, [constants.BROTLI_PARAM_LGWIN]: 16 } }).byteLength < sample.byteLength * SAMPLE_RATIO)
    this.remember(key, verdict)
    if (!verdict) this.stats.incompressibleChunks++
    return verdict
  }

  /** Whether a chunk of `size` bytes may join a batch of `count` chunks and `raw` bytes. */
  fits (count: number, raw: number, size: number): boolean {
    return count < MAX_BLOCKS_PER_BATCH && raw + size <= this.batchBytes
  }

  /** The frames for a batch: one BLOCKS frame, or plain BLOCK frames when compression does not pay. */
  pack (batch: Array<{ id: ChunkId, bytes: Uint8Array }>): Array<BlocksMessage | BlockMessage> {
    const raw = Buffer.concat(batch.map(b => b.bytes))
    const payload = compressBatch(raw)
    if (payload.byteLength >= raw.byteLength * BATCH_RATIO) {
      for (const b of batch) this.remember(toHex(b.id), false)
      this.stats.incompressibleChunks += batch.length
      return batch.map(b => ({ type: 'BLOCK', id: b.id, bytes: b.bytes }))
    }
    this.stats.batches++
    this.stats.batchedRaw += raw.byteLength
    this.stats.batchedWire += payload.byteLength
    return [{ type: 'BLOCKS', codec: 'br', entries: batch.map(b => ({ id: b.id, size: b.bytes.byteLength })), payload }]
  }

  private remember (key: string, verdict: boolean): void {
    this.verdicts.set(key, verdict)
  }
}
