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
