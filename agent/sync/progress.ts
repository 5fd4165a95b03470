// What a running sync reports (status, the `sync` command's progress bar, the dashboard).

export type SyncPhase = 'waiting' | 'fetching-manifest' | 'planning' | 'fetching' | 'finalizing' | 'complete' | 'failed'

/**
 * Why a sync waits and cannot move by itself (issue 24.4):
 * - untrusted-key (or another refusal code): a newer version was announced and refused, e.g. signed by a key not trusted here;
 * - no-peers: no connected peer holds the version (or is syncing it);
 * - no-source: chunks that no connected peer can serve (those holding the version answered DONT_HAVE);
 * - source-changed: the same, and the publisher reports that its source changed since the version was published.
 */
export type StuckReason = 'untrusted-key' | 'refused' | 'no-peers' | 'no-source' | 'source-changed'

export interface Stuck {
  reason: StuckReason
  /** One line for people: what is wrong and what to do. */
  message: string
  /** Since when (local clock) this has been the case. */
  sinceMs: number
}

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
  /** Set while the sync cannot move by itself, with the reason. */
  stuck?: Stuck
}
