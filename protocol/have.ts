import { CHUNK_ID_BYTES } from './limits.js'
import { expectBytes, expectInt } from './codec.js'
import { validateTreeName } from './paths.js'
import { InvalidMessageError } from './errors.js'
import type { ChunkId } from './chunk-id.js'

// HAVE: "I now hold these chunks of tree@seq", sent by a site to its direct peers while it syncs that version
// (agent/net/have-protocol.ts), so sites pulling the same version take chunks from each other instead of all
// from the origin. An empty list is the beacon a site sends when it starts (and keeps sending while it
// syncs): "I am syncing this version". The wire form is the HAVE message of protocol/messages.ts.

/** Ids per HAVE message: 16384 × 32 B = 512 KiB a frame. */
export const MAX_HAVE_IDS = 16384

export interface HaveMessage {
  tree: string
  seq: number
  ids: ChunkId[]
}

/** The packed form of a HAVE's ids: their 32-byte ids back to back. */
export function packHaveIds (ids: ChunkId[]): Uint8Array {
  if (ids.length > MAX_HAVE_IDS) throw new InvalidMessageError(`HAVE with ${ids.length} ids; limit ${MAX_HAVE_IDS}`)
  const out = new Uint8Array(ids.length * CHUNK_ID_BYTES)
  ids.forEach((id, i) => out.set(id, i * CHUNK_ID_BYTES))
  return out
}

/** Checks a HAVE's fields as decoded from untrusted bytes. */
export function haveFromWire (tree: unknown, seq: unknown, packedIds: unknown): HaveMessage {
  const name = validateTreeName(tree)
  const n = expectInt(seq, 'HAVE seq', 1, Number.MAX_SAFE_INTEGER)
  const raw = expectBytes(packedIds, 'HAVE ids', undefined, MAX_HAVE_IDS * CHUNK_ID_BYTES)
  if (raw.byteLength % CHUNK_ID_BYTES !== 0) throw new InvalidMessageError('HAVE ids: not a whole number of ids')
  const ids: ChunkId[] = []
  for (let i = 0; i < raw.byteLength; i += CHUNK_ID_BYTES) ids.push(raw.subarray(i, i + CHUNK_ID_BYTES))
  return { tree: name, seq: n, ids }
}
