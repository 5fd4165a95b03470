// /deltamesh/chunks/1.0.0: the serving side (ChunkServer) and the fetching side (ChunkClient).
// Frames: WANT [ids ≤ MAX_WANTS_PER_FRAME] → BLOCK (id, bytes) | DONT_HAVE (id) per id; ERROR ends the stream.
export { ChunkServer, DEFAULT_READ_AHEAD } from './chunk-server.js'
export type { ChunkProvider, ChunkServerComponents, ChunkServerInit } from './chunk-server.js'
export {
  ChunkClient, DEFAULT_MAX_OUTSTANDING_BYTES, DEFAULT_MAX_OUTSTANDING_CHUNKS, DEFAULT_OPEN_TIMEOUT_MS, DEFAULT_STALL_TIMEOUT_MS,
} from './chunk-client.js'
export type {
  ChunkClientComponents, ChunkClientInit, FetchFailure, FetchFailureReason, FetchOptions, FetchResult,
} from './chunk-client.js'
