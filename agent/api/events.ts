// The agent's event stream (`deltamesh events`, GET /v1/events on the control socket, the dashboard's live
// feed): one flat JSON object per event, with a timestamp, in the order the agent saw them.
import type { GateRecord } from '../store/types.js'

export type AgentEventType =
  /** The stream is open (its first line): what follows is live. */
  | 'following'
  /** A version not known before, from gossip, a peer's heads or our own publish (`via`, `peer`). */
  | 'version-announced'
  | 'version-admitted'
  /** Not admitted (`reason`: the admission code, `message`). */
  | 'version-refused'
  | 'sync-started'
  /** At most one a second per tree, and at each phase change. */
  | 'sync-progress'
  | 'sync-complete'
  | 'sync-failed'
  | 'gate-started'
  | 'gate-passed'
  /** `reason`, `exitCode`, `output` (the command's last lines). */
  | 'gate-refused'
  /** `deltamesh accept`: a version the gate refused, exposed by hand. */
  | 'version-accepted'
  /** The subscription path now points at `path` (the version's directory). */
  | 'path-flipped'
  | 'on-version-started'
  | 'on-version-done'
  | 'on-version-failed'
  | 'peer-connected'
  | 'peer-disconnected'
  | 'peer-banned'
  | 'limit-changed'
  /** This stream's reader was too slow: `count` events were left out here. */
  | 'events-dropped'

export const AGENT_EVENT_TYPES: ReadonlySet<string> = new Set<AgentEventType>([
  'following', 'version-announced', 'version-admitted', 'version-refused', 'sync-started', 'sync-progress', 'sync-complete', 'sync-failed',
  'gate-started', 'gate-passed', 'gate-refused', 'version-accepted', 'path-flipped', 'on-version-started', 'on-version-done', 'on-version-failed',
  'peer-connected', 'peer-disconnected', 'peer-banned', 'limit-changed', 'events-dropped',
])

/** What an event may carry besides its type and time (each type uses a few). */
export interface AgentEventFields {
  tree?: string
  seq?: number
  /** A version's label. */
  label?: string
  peer?: string
  via?: string
  reason?: string
  message?: string
  phase?: string
  bytesDone?: number
  bytesTotal?: number
  chunksDone?: number
  chunksTotal?: number
  rateBps?: number
  bytesFetched?: number
  durationMs?: number
  path?: string
  /** The version served before (path-flipped, on-version). */
  previousSeq?: number
  exitCode?: number | null
  output?: string[]
  gate?: GateRecord['outcome']
  /** Versions the post-version command did not run for separately (coalesced into this run). */
  coalesced?: number
  /** Changes of the version against the one served before it, per kind. */
  changes?: Record<string, number>
  link?: string
  limit?: { up: number | null, down: number | null }
  weight?: number
  untilMs?: number
  count?: number
}

export interface AgentEvent extends AgentEventFields {
  /** Increasing within one agent process. */
  id: number
  type: AgentEventType
  /** ISO 8601, UTC, milliseconds. */
  time: string
  timeMs: number
}

export interface EventsOptions {
  /** Only this tree's events (and events of no tree: peers, limits). */
  tree?: string
  signal?: AbortSignal
  onEvent: (event: AgentEvent) => void
}
