import { decodeUntrusted, encodeCanonical, expectInt, expectString, expectTuple } from './codec.js'
import { InvalidMessageError, LimitExceededError } from './errors.js'
import { MAX_TREE_NAME_BYTES } from './limits.js'
import { validateTreeName } from './paths.js'
import { MAX_STATUS_BYTES } from './wire-limits.js'

// STATUS: a small periodic summary one site gossips on STATUS_TOPIC, so that every agent can show the whole
// network (which site holds which version, what is syncing, what each link carries) without asking anyone.
// Gossipsub signs each message with the sender's libp2p key and only allowlisted peers connect; the origin
// is therefore known, but what it says is still hostile input: every field is bounded and checked here.
//
//   ['deltamesh/status', 1, sentAtMs, name, agentVersion, startedAtMs, totals, trees, peers, links]
//   totals = [bytesUp, bytesDown, rateUp, rateDown]
//   tree   = [name, currentSeq|nil, newestSeq|nil, [heldSeq…], sync|nil (, unservableSeq)]
//            unservableSeq only when set (a publisher whose source changed since it published that version),
//            so that the statuses of every other site still decode at agents from before it
//   sync   = [seq, phase, bytesDone, bytesTotal, rateBps, startedAtMs]
//   peer   = [peerId, connected, rateUp, rateDown]
//   link   = [name, limitUp|nil, limitDown|nil, rateUp, rateDown, peers]
//   serve  = [tree, url, location|nil, preference]        (an 11th field, `serves`, sent only when not empty)
// Arrays, never maps (canonical msgpack: codec.ts); nil for "none" (no version held, unlimited).
// A status without serves is the 10-field tuple older agents read; they ignore (do not show, never strike)
// a site that declares [[serve]] URLs.

/**
 * Trees per status. Each costs at most ~340 bytes (a 200-byte name, 8 held seqs, a sync), so 128 trees plus the peer and link
 * bounds below stay under MAX_STATUS_BYTES whatever the values (checked by a unit test); a site mirroring more
 * trees reports the first 128 (trimStatus).
 */
export const MAX_STATUS_TREES = 128
/** Peers per status: above the sites of one mirror network (tens); 128 would overflow MAX_STATUS_BYTES. */
export const MAX_STATUS_PEERS = 64
/** Links per status (named groups of peers behind one WAN link). */
export const MAX_STATUS_LINKS = 64
/** Complete versions listed per tree: retention keeps 3 by default. */
export const MAX_HELD_SEQS = 8
export const MAX_SITE_NAME_BYTES = 100
export const MAX_LINK_NAME_BYTES = 100
export const MAX_AGENT_VERSION_BYTES = 32
/** A libp2p peer id as text (base58btc multihash: 46 chars for ed25519 keys, 52–53 for others). */
const PEER_ID_TEXT = /^[1-9A-HJ-NP-Za-km-z]{32,64}$/
/** [[serve]] entries per status: a site publishing every tree it mirrors over HTTP and HTTPS. */
export const MAX_STATUS_SERVES = 64
/** A served URL: a base URL a mirror admin types, with room for a long path. */
export const MAX_SERVE_URL_BYTES = 512
/** Preference of a served URL: 1 (last resort) to 100 (first choice), as in a metalink's `preference`. */
export const MAX_SERVE_PREFERENCE = 100
/**
 * An absolute http(s) URL of printable ASCII without spaces, quotes, angle brackets, backslashes, query or
 * fragment: what goes into a metalink's XML and a mirrorlist line is then never markup, whoever sent it.
 */
const SERVE_URL = /^https?:\/\/[A-Za-z0-9.-]+(:\d{1,5})?(\/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?$/
/** An ISO 3166-1 alpha-2 country code, upper case. */
const COUNTRY_CODE = /^[A-Z]{2}$/

const STATUS_TAG = 'deltamesh/status'
const FORMAT_VERSION = 1
const MAX_U53 = Number.MAX_SAFE_INTEGER

/** The sync phases a status may report (the same names as the agent's SyncProgress.phase). */
export const SYNC_PHASES = ['waiting', 'fetching-manifest', 'planning', 'fetching', 'finalizing', 'complete', 'failed'] as const
export type StatusSyncPhase = typeof SYNC_PHASES[number]

export interface StatusSync {
  seq: number
  phase: StatusSyncPhase
  bytesDone: number
  bytesTotal: number
  rateBps: number
  startedAtMs: number
}

export interface StatusTree {
  name: string
  currentSeq?: number
  newestSeq?: number
  /** Complete versions held, ascending (at most MAX_HELD_SEQS, the newest ones). */
  held: number[]
  sync?: StatusSync
  /** At a publisher: its newest version of the tree that it cannot serve completely (its source changed since). */
  unservableSeq?: number
}

export interface StatusPeer {
  peerId: string
  connected: boolean
  rateUp: number
  rateDown: number
}

export interface StatusLink {
  name: string
  /** bytes/s; undefined = unlimited */
  limitUp?: number
  limitDown?: number
  rateUp: number
  rateDown: number
  peers: number
}

/** Where a site publishes a tree it mirrors over HTTP(S) (its [[serve]] config). */
export interface StatusServe {
  tree: string
  /** Base URL of the tree: a file's URL is this plus '/' and its path. */
  url: string
  /** ISO 3166-1 alpha-2 country code, upper case. */
  location?: string
  preference: number
}

export interface SiteStatus {
  /** The sender's clock: only used to order one site's own messages (a replayed older one is ignored). */
  sentAtMs: number
  /** Self-chosen site name; a receiver prefers the name its own config gives that peer. */
  name: string
  agentVersion: string
  startedAtMs: number
  totals: { bytesUp: number, bytesDown: number, rateUp: number, rateDown: number }
  trees: StatusTree[]
  peers: StatusPeer[]
  links: StatusLink[]
  /** [[serve]] URLs of the trees this site mirrors (absent or empty: none). */
  serves?: StatusServe[]
}

const u53 = (v: unknown, what: string, min = 0): number => expectInt(v, what, min, MAX_U53)
/** Rates travel as whole bytes per second. */
const rate = (n: number): number => Math.max(0, Math.round(n))

function optional<T> (v: unknown, read: (v: unknown) => T): T | undefined {
  return v === null || v === undefined ? undefined : read(v)
}

function list (v: unknown, what: string, max: number): unknown[] {
  if (!Array.isArray(v)) throw new InvalidMessageError(`${what}: not an array`)
  if (v.length > max) throw new LimitExceededError(what, v.length, max)
  return v
}

function tuple (v: unknown, what: string, length: number): unknown[] {
  if (!Array.isArray(v) || v.length !== length) throw new InvalidMessageError(`${what}: not an array of ${length}`)
  return v
}

/** Encodes a status; throws LimitExceededError when lists exceed their bounds (callers trim first: trimStatus). */
export function encodeSiteStatus (s: SiteStatus): Uint8Array {
  if (s.trees.length > MAX_STATUS_TREES) throw new LimitExceededError('status trees', s.trees.length, MAX_STATUS_TREES)
  if (s.peers.length > MAX_STATUS_PEERS) throw new LimitExceededError('status peers', s.peers.length, MAX_STATUS_PEERS)
  if (s.links.length > MAX_STATUS_LINKS) throw new LimitExceededError('status links', s.links.length, MAX_STATUS_LINKS)
  const serves = s.serves ?? []
  if (serves.length > MAX_STATUS_SERVES) throw new LimitExceededError('status serves', serves.length, MAX_STATUS_SERVES)
  for (const t of s.trees) validateTreeName(t.name)
  const serveList = serves.map(v => [v.tree, v.url, v.location ?? null, v.preference])
  const bytes = encodeCanonical([...statusFields(s), ...(serveList.length === 0 ? [] : [serveList])])
  // decode our own bytes: a status we could not accept from a peer must not leave this site either
  decodeSiteStatus(bytes)
  return bytes
}

/**
 * Cuts a status down to what one message may carry (names are cut, lists truncated). Serves come last: those
 * that would take the message over MAX_STATUS_BYTES are left out (only a site reporting ~128 trees of
 * 200-byte names gets there); the caller compares the counts to say so.
 */
export function trimStatus (s: SiteStatus): SiteStatus {
  const trimmed = trimLists(s)
  const serves = (s.serves ?? []).slice(0, MAX_STATUS_SERVES)
  if (serves.length === 0) return trimmed
  let room = MAX_STATUS_BYTES - encodeCanonical(statusFields(trimmed)).byteLength - SERVES_LIST_OVERHEAD
  const kept: StatusServe[] = []
  for (const v of serves) {
    room -= encodeCanonical([v.tree, v.url, v.location ?? null, v.preference]).byteLength
    if (room < 0) break
    kept.push(v)
  }
  return { ...trimmed, serves: kept }
}

/** The array header of the serves list (msgpack: at most 3 bytes for up to 65,535 items). */
const SERVES_LIST_OVERHEAD = 3

function statusFields (s: SiteStatus): unknown[] {
  return [
    STATUS_TAG, FORMAT_VERSION, s.sentAtMs, s.name, s.agentVersion, s.startedAtMs,
    [s.totals.bytesUp, s.totals.bytesDown, rate(s.totals.rateUp), rate(s.totals.rateDown)],
    s.trees.map(t => [
      t.name, t.currentSeq ?? null, t.newestSeq ?? null, t.held.slice(-MAX_HELD_SEQS),
      t.sync === undefined ? null : [t.sync.seq, t.sync.phase, t.sync.bytesDone, t.sync.bytesTotal, rate(t.sync.rateBps), t.sync.startedAtMs],
      ...(t.unservableSeq === undefined ? [] : [t.unservableSeq]),
    ]),
    s.peers.map(p => [p.peerId, p.connected, rate(p.rateUp), rate(p.rateDown)]),
    s.links.map(l => [l.name, l.limitUp ?? null, l.limitDown ?? null, rate(l.rateUp), rate(l.rateDown), l.peers]),
  ]
}

function trimLists (s: SiteStatus): SiteStatus {
  return {
    ...s,
    name: cut(s.name, MAX_SITE_NAME_BYTES),
    agentVersion: cut(s.agentVersion, MAX_AGENT_VERSION_BYTES),
    trees: s.trees.slice(0, MAX_STATUS_TREES).map(t => ({ ...t, held: t.held.slice(-MAX_HELD_SEQS) })),
    peers: s.peers.slice(0, MAX_STATUS_PEERS),
    links: s.links.slice(0, MAX_STATUS_LINKS).map(l => ({ ...l, name: cut(l.name, MAX_LINK_NAME_BYTES) })),
  }
}

function cut (s: string, maxBytes: number): string {
  let out = s
  while (Buffer.byteLength(out) > maxBytes) out = out.slice(0, -1)
  return out
}

/** Decodes and validates a status from the network. Throws InvalidMessageError (or LimitExceededError). */
export function decodeSiteStatus (bytes: Uint8Array): SiteStatus {
  if (bytes.byteLength > MAX_STATUS_BYTES) throw new LimitExceededError('status size', bytes.byteLength, MAX_STATUS_BYTES)
  const value = decodeUntrusted(bytes, 'STATUS')
  // 10 fields, or 11 with the serves (sent only when there are some)
  const t = expectTuple(value, 'STATUS', STATUS_TAG, FORMAT_VERSION, Array.isArray(value) && value.length === 11 ? 11 : 10)
  const totals = tuple(t[6], 'STATUS totals', 4)
  const seenTrees = new Set<string>()
  const status: SiteStatus = {
    sentAtMs: u53(t[2], 'STATUS sentAtMs'),
    name: expectString(t[3], 'STATUS name', MAX_SITE_NAME_BYTES),
    agentVersion: expectString(t[4], 'STATUS agentVersion', MAX_AGENT_VERSION_BYTES),
    startedAtMs: u53(t[5], 'STATUS startedAtMs'),
    totals: { bytesUp: u53(totals[0], 'bytesUp'), bytesDown: u53(totals[1], 'bytesDown'), rateUp: u53(totals[2], 'rateUp'), rateDown: u53(totals[3], 'rateDown') },
    trees: list(t[7], 'STATUS trees', MAX_STATUS_TREES).map(v => {
      const tree = decodeTree(v)
      if (seenTrees.has(tree.name)) throw new InvalidMessageError(`STATUS: tree ${tree.name} listed twice`)
      seenTrees.add(tree.name)
      return tree
    }),
    peers: list(t[8], 'STATUS peers', MAX_STATUS_PEERS).map(decodePeer),
    links: list(t[9], 'STATUS links', MAX_STATUS_LINKS).map(decodeLink),
  }
  if (t.length === 11) {
    const serves = list(t[10], 'STATUS serves', MAX_STATUS_SERVES).map(decodeServe)
    if (serves.length === 0) throw new InvalidMessageError('STATUS serves: empty (omitted when there are none)')
    status.serves = serves
  }
  return status
}

function decodeServe (v: unknown): StatusServe {
  const e = tuple(v, 'STATUS serve', 4)
  const tree = treeName(expectString(e[0], 'STATUS serve tree', MAX_TREE_NAME_BYTES))
  const url = expectString(e[1], 'STATUS serve url', MAX_SERVE_URL_BYTES)
  if (!SERVE_URL.test(url)) throw new InvalidMessageError('STATUS serve url: not an http(s) URL of plain characters')
  const location = optional(e[2], x => expectString(x, 'STATUS serve location', 2))
  if (location !== undefined && !COUNTRY_CODE.test(location)) throw new InvalidMessageError('STATUS serve location: not a country code')
  return { tree, url, location, preference: expectInt(e[3], 'STATUS serve preference', 1, MAX_SERVE_PREFERENCE) }
}

/** Whether `url` is what a status may carry as a served URL (the config checks it with the same rule). */
export function isServeUrl (url: string): boolean {
  return Buffer.byteLength(url) <= MAX_SERVE_URL_BYTES && SERVE_URL.test(url)
}

function decodeTree (v: unknown): StatusTree {
  const t = Array.isArray(v) && v.length === 6 ? v : tuple(v, 'STATUS tree', 5)
  const name = treeName(expectString(t[0], 'STATUS tree name', MAX_TREE_NAME_BYTES))
  const held = list(t[3], 'STATUS held versions', MAX_HELD_SEQS).map(s => u53(s, 'STATUS held seq', 1))
  for (let i = 1; i < held.length; i++) if ((held[i] as number) <= (held[i - 1] as number)) throw new InvalidMessageError('STATUS held versions: not ascending')
  return {
    name,
    currentSeq: optional(t[1], s => u53(s, 'STATUS currentSeq', 1)),
    newestSeq: optional(t[2], s => u53(s, 'STATUS newestSeq', 1)),
    held,
    sync: optional(t[4], decodeSync),
    ...(t.length === 6 ? { unservableSeq: u53(t[5], 'STATUS unservableSeq', 1) } : {}),
  }
}

/** A bad tree name from a peer is a bad message (one error type for the receiver to handle). */
function treeName (name: string): string {
  try {
    return validateTreeName(name)
  } catch (err) {
    throw new InvalidMessageError(`STATUS tree name: ${(err as Error).message}`, { cause: err })
  }
}

function decodeSync (v: unknown): StatusSync {
  const s = tuple(v, 'STATUS sync', 6)
  const phase = SYNC_PHASES.find(p => p === s[1])
  if (phase === undefined) throw new InvalidMessageError(`STATUS sync phase ${JSON.stringify(String(s[1]).slice(0, 40))} unknown`)
  const bytesTotal = u53(s[3], 'STATUS sync bytesTotal')
  return {
    seq: u53(s[0], 'STATUS sync seq', 1),
    phase,
    bytesDone: expectInt(s[2], 'STATUS sync bytesDone', 0, bytesTotal),
    bytesTotal,
    rateBps: u53(s[4], 'STATUS sync rate'),
    startedAtMs: u53(s[5], 'STATUS sync startedAtMs'),
  }
}

function decodePeer (v: unknown): StatusPeer {
  const p = tuple(v, 'STATUS peer', 4)
  const peerId = expectString(p[0], 'STATUS peer id', 64)
  if (!PEER_ID_TEXT.test(peerId)) throw new InvalidMessageError('STATUS peer id: not a base58 peer id')
  if (typeof p[1] !== 'boolean') throw new InvalidMessageError('STATUS peer connected: not a boolean')
  return { peerId, connected: p[1], rateUp: u53(p[2], 'STATUS peer rateUp'), rateDown: u53(p[3], 'STATUS peer rateDown') }
}

function decodeLink (v: unknown): StatusLink {
  const l = tuple(v, 'STATUS link', 6)
  return {
    name: expectString(l[0], 'STATUS link name', MAX_LINK_NAME_BYTES),
    limitUp: optional(l[1], x => u53(x, 'STATUS link limitUp', 1)),
    limitDown: optional(l[2], x => u53(x, 'STATUS link limitDown', 1)),
    rateUp: u53(l[3], 'STATUS link rateUp'),
    rateDown: u53(l[4], 'STATUS link rateDown'),
    peers: u53(l[5], 'STATUS link peers'),
  }
}
