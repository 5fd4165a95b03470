// Temporary bans of peers that exhausted their misbehaviour budget. A ban is what makes "disconnected"
// stick: while it lasts the connection gater refuses the peer both ways and the dialer does not redial it,
// so a liar cannot simply reconnect and lie again. Bans expire (an operator's site may have been broken,
// not hostile, and is welcome back once fixed) and double on each repeat, so a persistent liar costs us
// less and less.
import type { Libp2p, PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import type { PeerStats } from './peer-stats.js'

/** First ban: long enough that a liar is out of every sync running now, short enough that a fixed site rejoins soon. */
export const DEFAULT_BAN_MS = 10 * 60_000
/** Repeated bans double up to this. */
export const MAX_BAN_MS = 24 * 60 * 60_000

export interface Ban {
  untilMs: number
  reason: string
  /** How many times this peer has been banned (the duration doubles each time). */
  count: number
}

export interface PeerBansInit {
  banMs?: number
  maxBanMs?: number
  now?: () => number
}

export class PeerBans {
  private readonly bans = new Map<string, Ban>()
  private readonly listeners = new Set<(peer: string, ban: Ban) => void>()
  private readonly banMs: number
  private readonly maxBanMs: number
  private readonly now: () => number

  constructor (init: PeerBansInit = {}) {
    this.banMs = init.banMs ?? DEFAULT_BAN_MS
    this.maxBanMs = Math.max(this.banMs, init.maxBanMs ?? MAX_BAN_MS)
    this.now = init.now ?? Date.now
  }

  /** Bans `peer` from now; a repeat ban lasts twice as long as the previous one. Returns the ban. */
  ban (peer: PeerId | string, reason: string): Ban {
    const key = peer.toString()
    const previous = this.bans.get(key)
    const count = (previous?.count ?? 0) + 1
    const duration = Math.min(this.maxBanMs, this.banMs * 2 ** Math.min(count - 1, 30))
    const ban: Ban = { untilMs: this.now() + duration, reason, count }
    this.bans.set(key, ban)
    for (const l of this.listeners) l(key, ban)
    return ban
  }

  /** The end of the peer's ban (ms since epoch), or undefined when it is not banned now. */
  bannedUntil (peer: PeerId | string): number | undefined {
    const ban = this.bans.get(peer.toString())
    return ban !== undefined && ban.untilMs > this.now() ? ban.untilMs : undefined
  }

  isBanned (peer: PeerId | string): boolean {
    return this.bannedUntil(peer) !== undefined
  }

  /** Every ban, expired ones included (their count still doubles the next ban). */
  snapshot (): Record<string, Ban> {
    return Object.fromEntries([...this.bans].map(([k, v]) => [k, { ...v }]))
  }

  /**
   * Takes back bans saved by `snapshot()` (the agent keeps them in its database, so a restart does not
   * forgive a liar). Entries that are not well-formed are skipped; a newer ban already held wins.
   */
  restore (saved: unknown): number {
    if (saved === null || typeof saved !== 'object') return 0
    let n = 0
    for (const [peer, value] of Object.entries(saved)) {
      const v = value as Partial<Ban> | null
      if (v === null || typeof v !== 'object' || !Number.isSafeInteger(v.untilMs) || !Number.isSafeInteger(v.count) || typeof v.reason !== 'string') continue
      const known = this.bans.get(peer)
      if (known !== undefined && known.untilMs >= (v.untilMs as number)) continue
      this.bans.set(peer, { untilMs: v.untilMs as number, count: Math.max(1, v.count as number), reason: v.reason.slice(0, 500) })
      n++
    }
    return n
  }

  /** Returns an unsubscribe function. */
  onBan (listener: (peer: string, ban: Ban) => void): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }
}

export interface BanPolicyComponents {
  libp2p: Pick<Libp2p, 'hangUp'>
  stats: PeerStats
  bans: PeerBans
  /** One log line per ban, with the reason (the operator's only clue why a site dropped out). */
  onBanned?: (peer: string, ban: Ban, strikes: number) => void
  onError?: (err: Error) => void
}

/**
 * The strike-budget handler for PeerStats: a peer whose strikes reach the budget is banned and hung up on.
 * Kept apart from agent.ts so integration tests wire the same policy to real nodes.
 */
export function banOnBudgetExceeded (c: BanPolicyComponents): (peerId: string, strikes: number) => void {
  return (peerId, strikes) => {
    const ban = c.bans.ban(peerId, c.stats.get(peerId).lastStrike ?? 'misbehaviour')
    c.onBanned?.(peerId, ban, strikes)
    c.libp2p.hangUp(peerIdFromString(peerId)).catch((err: Error) => c.onError?.(err))
  }
}
