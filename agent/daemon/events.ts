// The agent's events, in one place: the parts call emit(); the control socket's streams and the dashboard's
// live feed listen. Nothing waits for a listener: a slow reader loses events (and is told how many) rather
// than slowing the agent or growing its memory.
import type { Logger } from '../core/log.js'
import type { AgentEvent, AgentEventFields, AgentEventType } from '../api/events.js'
import type { SyncProgress } from '../api/api.js'

/** Events kept for the dashboard's live feed. */
export const RECENT_EVENTS = 200
/** At most one sync-progress event a tree per this (phase changes go at once). */
export const PROGRESS_EVENT_MS = 1_000

export type EventListener = (event: AgentEvent) => void

export class EventHub {
  private nextId = 1
  private readonly recent: AgentEvent[] = []
  private readonly listeners = new Set<EventListener>()
  private readonly lastProgress = new Map<string, { atMs: number, phase: string }>()

  constructor (private readonly log: Logger, private readonly now: () => number = Date.now) {}

  /** An event stamped now, told to nobody (emit tells everyone). */
  make (type: AgentEventType, fields: AgentEventFields = {}): AgentEvent {
    const timeMs = this.now()
    return { id: this.nextId++, type, time: new Date(timeMs).toISOString(), timeMs, ...fields }
  }

  emit (type: AgentEventType, fields: AgentEventFields = {}): AgentEvent {
    const event = this.make(type, fields)
    this.recent.push(event)
    if (this.recent.length > RECENT_EVENTS) this.recent.shift()
    for (const listener of this.listeners) {
      try { listener(event) } catch (err) { this.log.warn({ err }, 'event listener failed') }
    }
    return event
  }

  /** A sync's progress: an event at most every PROGRESS_EVENT_MS per tree, and at once when the phase changes (to 'complete': sync-complete). */
  progress (p: SyncProgress): void {
    if (p.phase === 'complete') return // sync-complete says it, once the version is also gated and flipped
    const last = this.lastProgress.get(p.tree)
    const at = this.now()
    if (last !== undefined && last.phase === p.phase && at - last.atMs < PROGRESS_EVENT_MS) return
    this.lastProgress.set(p.tree, { atMs: at, phase: p.phase })
    this.emit('sync-progress', { tree: p.tree, seq: p.seq, phase: p.phase, bytesDone: p.bytesDone, bytesTotal: p.bytesTotal, chunksDone: p.chunksDone, chunksTotal: p.chunksTotal, rateBps: Math.round(p.rateBps) })
  }

  /** A sync ended: its next one starts reporting progress at once. */
  progressEnded (tree: string): void { this.lastProgress.delete(tree) }

  subscribe (listener: EventListener): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  /** The last `n` events (oldest first), for the dashboard. */
  recentEvents (n = RECENT_EVENTS): AgentEvent[] {
    return this.recent.slice(-n)
  }
}
