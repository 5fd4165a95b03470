// What a running sync reports (status, the `sync` command's progress bar, the dashboard).

export type SyncPhase = 'waiting' | 'fetching-manifest' | 'planning' | 'fetching' | 'finalizing' | 'complete' | 'failed'

export interface SyncProgress {
  tree: string
  seq: number
  phase: SyncPhase
  /** Bytes and chunks that must come from the network for this version (the plan), and how many have. */
  bytesTotal: number
  bytesDone: number
  chunksTotal: number
  chunksDone: number
  /** Bytes of the version that were already on disk here (other versions, other trees). */
  bytesLocal: number
  /** Recent download rate, bytes/s. */
  rateBps: number
  startedAtMs: number
  /** Peers this sync is pulling from right now. */
  sources: number
  error?: string
}
