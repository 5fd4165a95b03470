import { CHUNK_ID_BYTES } from './limits.js'
import { decodeUntrusted, encodeCanonical, expectBytes, expectInt, expectTuple } from './codec.js'
import { validateTreeName } from './paths.js'
import { InvalidMessageError } from './errors.js'
import type { ChunkId } from './chunk-id.js'

// HAVE: "I now hold these chunks of tree@seq", gossiped by a site while it syncs that version, so sites
// pulling the same version take chunks from each other instead of all from the origin. An empty list is
// the beacon a site sends when it starts (and keeps sending while it syncs): "I am syncing this version".

/** Ids per HAVE message: 16384 × 32 B = 512 KiB, well under gossipsub's 1 MiB message limit. */
export const MAX_HAVE_IDS = 16384

const HAVE_TAG = 'deltamesh/have'
const FORMAT_VERSION = 1

/** Gossip topic of a tree's HAVE messages. */
export function haveTopic (tree: string): string {
  return `deltamesh/have/1/${validateTreeName(tree)}`
}

export interface HaveMessage {
  tree: string
  seq: number
  ids: ChunkId[]
}

export function encodeHave (msg: HaveMessage): Uint8Array {
  if (msg.ids.length > MAX_HAVE_IDS) throw new InvalidMessageError(`HAVE with ${msg.ids.length} ids; limit ${MAX_HAVE_IDS}`)
  const ids = new Uint8Array(msg.ids.length * CHUNK_ID_BYTES)
  msg.ids.forEach((id, i) => ids.set(id, i * CHUNK_ID_BYTES))
  return encodeCanonical([HAVE_TAG, FORMAT_VERSION, validateTreeName(msg.tree), msg.seq, ids])
}

export function decodeHave (bytes: Uint8Array): HaveMessage {
  const t = expectTuple(decodeUntrusted(bytes, 'HAVE'), 'HAVE', HAVE_TAG, FORMAT_VERSION, 5)
  const tree = validateTreeName(t[2])
  const seq = expectInt(t[3], 'HAVE seq', 1, Number.MAX_SAFE_INTEGER)
  const raw = expectBytes(t[4], 'HAVE ids', undefined, MAX_HAVE_IDS * CHUNK_ID_BYTES)
  if (raw.byteLength % CHUNK_ID_BYTES !== 0) throw new InvalidMessageError('HAVE ids: not a whole number of ids')
  const ids: ChunkId[] = []
  for (let i = 0; i < raw.byteLength; i += CHUNK_ID_BYTES) ids.push(raw.subarray(i, i + CHUNK_ID_BYTES))
  return { tree, seq, ids }
}
