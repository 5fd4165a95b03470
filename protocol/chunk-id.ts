import { createHash } from 'node:crypto'
import { CHUNK_ID_BYTES } from './limits.js'
import { ChunkHashMismatchError, InvalidMessageError } from './errors.js'

/** A SHA-256 digest naming a chunk (or a root blob). Always CHUNK_ID_BYTES long. */
export type ChunkId = Uint8Array

export function chunkIdOf (bytes: Uint8Array): ChunkId {
  return createHash('sha256').update(bytes).digest()
}

export function toHex (id: Uint8Array): string {
  return Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString('hex')
}

export function fromHex (hex: string): ChunkId {
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new InvalidMessageError(`Not a chunk id: ${JSON.stringify(hex.slice(0, 80))}`)
  return Buffer.from(hex, 'hex')
}

export function idsEqual (a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && Buffer.compare(a, b) === 0
}

export function isChunkId (value: unknown): value is ChunkId {
  return value instanceof Uint8Array && value.byteLength === CHUNK_ID_BYTES
}

/** Throws ChunkHashMismatchError unless sha256(bytes) === id. Identity is computed, never trusted. */
export function verifyChunk (id: ChunkId, bytes: Uint8Array, context = ''): void {
  const actual = chunkIdOf(bytes)
  if (!idsEqual(actual, id)) throw new ChunkHashMismatchError(toHex(id), toHex(actual), context)
}

/**
 * Byte arrays that verifyReceivedChunk found to be the chunk they claim, by object: a chunk arriving from a
 * peer is hashed once, where it arrives (so a bad one is blamed on its sender), and the materializer that
 * writes it takes that check instead of hashing the same bytes again (profiled: SHA-256 was the subscriber's
 * largest cost, twice over). Only arrays made for one received chunk are marked, and nothing writes into
 * them after they are received; a pooled or reused buffer is never marked, so it is always hashed.
 */
const received = new WeakMap<Uint8Array, ChunkId>()

/** verifyChunk for bytes that came from a peer (a fresh array of their own), remembering that they matched. */
export function verifyReceivedChunk (id: ChunkId, bytes: Uint8Array, context = ''): void {
  verifyChunk(id, bytes, context)
  received.set(bytes, id)
}

/** verifyChunk, unless these very bytes were already verified as `id` by verifyReceivedChunk. */
export function verifyChunkOnce (id: ChunkId, bytes: Uint8Array, context = ''): void {
  const known = received.get(bytes)
  if (known !== undefined && idsEqual(known, id)) return
  verifyChunk(id, bytes, context)
}
