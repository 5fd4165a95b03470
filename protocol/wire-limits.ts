// Every size a peer controls on the wire has a named bound here, with the reason for its value.
// Data-format bounds (chunk, envelope, tree name) live in limits.ts.
import { CHUNK_ID_BYTES, MAX_CHUNK_SIZE, MAX_ENVELOPE_BYTES, MAX_TREE_NAME_BYTES } from './limits.js'
import { MAX_HAVE_IDS } from './have.js'

/** Ids in one WANT frame: 1024 × 32 B ≈ 33 KiB, small enough to parse in well under a millisecond. */
export const MAX_WANTS_PER_FRAME = 1024

/**
 * Ids a server holds queued for one stream (asked, not yet answered). 4096 × 64 KiB average chunks ≈ 256 MiB
 * in flight: far above any useful window (a few MiB fills a WAN pipe), while bounding the server's queue.
 */
export const MAX_OUTSTANDING_WANTS = 4096

/** Encoding overhead of a frame around its payload (tag, array and bin headers, ids, seq…). */
const FRAME_OVERHEAD = 256

/** Largest frame on the chunks protocol: one BLOCK of MAX_CHUNK_SIZE plus its header. */
export const MAX_FRAME_BYTES = MAX_CHUNK_SIZE + CHUNK_ID_BYTES + FRAME_OVERHEAD

/**
 * Raw (decompressed) bytes of one BLOCKS frame. Large enough that the compression context spans many
 * chunks (brotli gains little beyond a few hundred KiB of history), small enough that a receiver never
 * inflates more than this per frame, whatever the compressed payload claims.
 */
export const MAX_BATCH_RAW_BYTES = 1024 * 1024

/** Chunks in one BLOCKS frame (at the 16 KiB minimum chunk size, 64 fill a 1 MiB batch). */
export const MAX_BLOCKS_PER_BATCH = 64

/** Largest frame on /deltamesh/chunks/1.1.0: a BLOCK of MAX_CHUNK_SIZE, or a BLOCKS frame (payload ≤ its raw size). */
export const MAX_FRAME_BYTES_1_1 = Math.max(MAX_FRAME_BYTES, MAX_BATCH_RAW_BYTES + MAX_BLOCKS_PER_BATCH * (CHUNK_ID_BYTES + 8) + FRAME_OVERHEAD)

/** Delta keys in one DELTA_WANT frame (one per changed file of a version; more go in further requests). */
export const MAX_DELTA_WANTS = 1024

/**
 * A delta is only worth it for a small changed file; the publisher computes none above this target size,
 * so a DELTA claiming more is hostile, and the receiver never rebuilds a file larger than this from one.
 */
export const MAX_DELTA_TARGET_BYTES = 1024 * 1024

/** Largest encoded delta: never larger than its target (else plain chunks are cheaper). */
export const MAX_DELTA_FRAME_BYTES = MAX_DELTA_TARGET_BYTES + FRAME_OVERHEAD

/** Largest frame a chunk server accepts: a full WANT frame (an ERROR is smaller). */
export const MAX_REQUEST_FRAME_BYTES = MAX_WANTS_PER_FRAME * (CHUNK_ID_BYTES + 2) + FRAME_OVERHEAD

/** Trees in one HEADS frame: an order of magnitude above the trees a site mirrors (tens to hundreds). */
export const MAX_HEADS = 1024

/** Largest HEADS frame: MAX_HEADS full envelopes with their tree names (~4.4 MiB, read once per connect). */
export const MAX_HEADS_FRAME_BYTES = MAX_HEADS * (MAX_ENVELOPE_BYTES + MAX_TREE_NAME_BYTES + 32) + FRAME_OVERHEAD

/** ERROR text is for logs only; a short sentence. */
export const MAX_ERROR_MESSAGE_BYTES = 256

/** Concurrent inbound chunk streams per peer: the client uses one; a few more cover reconnect overlap. */
export const MAX_INBOUND_CHUNK_STREAMS_PER_PEER = 4

/** Concurrent inbound heads exchanges per connection: one on connect plus occasional refreshes. */
export const MAX_INBOUND_HEADS_STREAMS = 4

/** A gossiped status blob (versions held, sync progress, link rates of one site). */
export const MAX_STATUS_BYTES = 64 * 1024

/** Largest HAVE frame on the haves protocol: MAX_HAVE_IDS ids (protocol/have.ts) and a tree name. */
export const MAX_HAVE_FRAME_BYTES = MAX_HAVE_IDS * CHUNK_ID_BYTES + MAX_TREE_NAME_BYTES + FRAME_OVERHEAD
