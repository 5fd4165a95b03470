import { toHex, type ChunkId } from '../../protocol/chunk-id.js'
import type { FetchFailure, FetchResult } from '../net/chunk-client.js'
import type { ChunkRef } from '../../protocol/manifest.js'
import type { Assignment, SwarmScheduler } from './swarm-scheduler.js'

/** Asks one peer for chunks (ChunkClient.fetch bound to a peer id string). */
export type FetchFn = (peerId: string, wants: ChunkRef[], options: {
  signal?: AbortSignal
  onBlock: (id: ChunkId, bytes: Uint8Array) => Promise<void>
  onFailure?: (failure: FetchFailure) => void
}) => Promise<FetchResult>

export interface PumpOptions {
  scheduler: SwarmScheduler
  fetch: FetchFn
  /** Stores a verified chunk; after it resolves the chunk counts as held. */
  onChunk: (id: ChunkId, bytes: Uint8Array, peerId: string) => Promise<void>
  /** A peer sent bytes that did not hash to the id: it is banned for this sync (and reported). */
  onBadChunk?: (peerId: string, failure: FetchFailure) => void
  signal: AbortSignal
  /** Re-evaluates the schedule this often even without events (owners stalling, peers joining). */
  tickMs?: number
}

const DEFAULT_TICK_MS = 250
/** Chunk writes in flight at once: enough to hide filesystem latency, few enough to bound memory (× chunk size). */
const MAX_CONCURRENT_WRITES = 32

/**
 * Drives a SwarmScheduler until every needed chunk is held: fills each peer's window, hands verified
 * chunks to onChunk, and turns every failure (DONT_HAVE, disconnect, stall, bad hash) into a reschedule
 * elsewhere. Resolves when nothing is needed; rejects only on abort or when onChunk fails (disk full…).
 */
export async function pumpChunks (o: PumpOptions): Promise<void> {
  const { scheduler, signal } = o
  if (scheduler.remaining === 0) return
  await new Promise<void>((resolve, reject) => {
    let finished = false
    let scheduled = false
    const writes = new WriteGate()
    const finish = (err?: unknown): void => {
      if (finished) return
      finished = true
      clearInterval(ticker)
      signal.removeEventListener('abort', onAbort)
      // a chunk delivered twice (a re-request raced the first answer) has a second write under way when the
      // first one completes the set: the caller finalizes next, so it must not see a write still running
      if (err !== undefined) reject(err)
      else if (writes.running === 0) resolve()
      else writes.whenIdle(resolve)
    }
    const onAbort = (): void => finish(signal.reason ?? new Error('aborted'))
    signal.addEventListener('abort', onAbort, { once: true })
    const ticker = setInterval(() => kick(), o.tickMs ?? DEFAULT_TICK_MS)

    const kick = (): void => {
      if (scheduled || finished) return
      scheduled = true
      queueMicrotask(() => { scheduled = false; dispatch() })
    }
    const pump: Pump = { o, writes, kick, finish }

    const dispatch = (): void => {
      if (finished) return
      if (scheduler.remaining === 0) { finish(); return }
      for (const assignment of scheduler.next()) fetchAssignment(pump, assignment)
    }
    kick()
  })
}

/** What every fetch of one pump shares. */
interface Pump {
  o: PumpOptions
  writes: WriteGate
  /** Dispatches again soon: once per microtask, however often it is called in between. */
  kick: () => void
  /** Ends the pump: rejects with err, or resolves once no write is under way. */
  finish: (err?: unknown) => void
}

/**
 * Fetches one assignment from its peer. Every chunk of it ends up received, failed (rescheduled elsewhere)
 * or stored; a peer that sent bad bytes is banned, one that is gone or stalled leaves the schedule.
 */
function fetchAssignment ({ o, writes, kick, finish }: Pump, { peerId, chunks }: Assignment): void {
  const { scheduler, signal } = o
  const pending = new Set(chunks.map(c => toHex(c.id)))
  o.fetch(peerId, chunks, {
    signal,
    onBlock: async (id, bytes) => {
      pending.delete(toHex(id))
      if (!scheduler.isNeeded(toHex(id))) { scheduler.received(id, peerId); return }
      // Writes run concurrently (a chunk's write is several filesystem and database round trips);
      // the client's delivery waits only when MAX_CONCURRENT_WRITES are under way, bounding memory.
      writes.started()
      o.onChunk(id, bytes, peerId).then(() => {
        scheduler.received(id, peerId)
        kick()
      }, (err: unknown) => {
        scheduler.failed(id, peerId, 'error')
        finish(err)
      }).finally(writes.done)
      if (writes.running >= MAX_CONCURRENT_WRITES) await writes.freeSlot()
    },
    onFailure: failure => {
      pending.delete(toHex(failure.id))
      if (failure.reason === 'hash-mismatch') {
        o.onBadChunk?.(peerId, failure)
        scheduler.ban(peerId)
      } else {
        scheduler.failed(failure.id, peerId, failure.reason === 'dont-have' ? 'dont-have' : 'error')
        if (failure.reason === 'disconnected' || failure.reason === 'unreachable' || failure.reason === 'stalled') scheduler.removePeer(peerId)
      }
      kick()
    },
  }).then(() => {
    // anything neither delivered nor reported goes back to the pool
    for (const hex of pending) { const c = chunks.find(w => toHex(w.id) === hex); if (c !== undefined) scheduler.failed(c.id, peerId, 'error') }
    kick()
  }, (err: unknown) => {
    for (const c of chunks) if (pending.has(toHex(c.id))) scheduler.failed(c.id, peerId, 'error')
    if (signal.aborted) finish(signal.reason)
    else kick()
    void err
  })
}

/**
 * Chunk writes under way, and deliveries waiting for one of them to finish (a counter and a queue: racing the
 * set of writes on every chunk cost a reaction per pending write per chunk).
 */
class WriteGate {
  private writing = 0
  private readonly slots: Array<() => void> = []
  private onIdle: (() => void) | undefined

  get running (): number { return this.writing }

  started (): void { this.writing++ }

  /** A write settled: the oldest waiting delivery goes on, and the pump learns when none is left. */
  readonly done = (): void => {
    this.writing--
    this.slots.shift()?.()
    if (this.writing === 0) this.onIdle?.()
  }

  /** Resolves when a write under way settles. */
  freeSlot (): Promise<void> { return new Promise<void>(resolve => this.slots.push(resolve)) }

  whenIdle (fn: () => void): void { this.onIdle = fn }
}
