// Sends this site's status on the status topic, and feeds what peers send into the view.
//
// Every interval the status is built, but sent only when it says something new — a sync's progress, a
// version held, a peer come or gone, a rate that moved — or when the last one is a heartbeat old. Each
// status is signed, relayed by every site and verified by every site, so a network of N quiet sites paid
// N messages per interval everywhere (~45 % of an idle agent's CPU with 4 peers: 1.58 → 0.87–0.89 s per
// minute, bench:serve --idle 60). Receivers call a site stale after a heartbeat and two intervals
// without news (operations.ts).
import { InvalidMessageError } from '../../protocol/errors.js'
import { encodeSiteStatus, type SiteStatus } from '../../protocol/site-status.js'
import type { Logger } from '../core/log.js'
import type { IngestResult, NetworkView } from './network-view.js'

export interface StatusGossipComponents {
  view: NetworkView
  log: Logger
  /** This site's status as it should go out now. */
  localStatus: () => Promise<SiteStatus>
  /** Publishes on the status topic; resolves to the number of peers it went to. */
  publish: (bytes: Uint8Array) => Promise<number>
  /** Every received status, with what was done with it (metrics). */
  onResult?: (result: IngestResult | 'invalid') => void
}

export interface StatusGossipInit {
  intervalMs: number
  /** An unchanged status still goes out this often (default HEARTBEAT_INTERVALS × intervalMs). */
  heartbeatMs?: number
}

/** An unchanged status is repeated every this many intervals (30 s at the default 5 s). */
export const HEARTBEAT_INTERVALS = 6
/** Rates below this (bytes/s) count as none: gossip, pings and keep-alives are not news. */
export const QUIET_RATE = 16 * 1024

/** A rate as news: none below QUIET_RATE, else its size in half-doublings (so a steady transfer is not news). */
function rateNews (bytesPerSecond: number): number {
  return bytesPerSecond < QUIET_RATE ? 0 : Math.round(Math.log2(bytesPerSecond) * 2)
}

/**
 * What in a status is news: everything but the clock, the byte totals (which every ping moves) and small
 * moves of the rates. Two statuses with the same fingerprint tell a dashboard the same thing.
 */
export function statusFingerprint (s: SiteStatus): string {
  return JSON.stringify([
    s.name, s.agentVersion, s.startedAtMs, rateNews(s.totals.rateUp), rateNews(s.totals.rateDown),
    s.trees,
    s.peers.map(p => [p.peerId, p.connected, rateNews(p.rateUp), rateNews(p.rateDown)]),
    s.links.map(l => [l.name, l.limitUp, l.limitDown, rateNews(l.rateUp), rateNews(l.rateDown), l.peers]),
    s.serves ?? [],
  ])
}

export class StatusGossip {
  private timer: ReturnType<typeof setInterval> | undefined
  private sending = false
  private lastFingerprint: string | undefined
  private lastSentAtMs = -Infinity
  private readonly heartbeatMs: number
  private readonly now: () => number
  /** Size of the last status sent (reported in logs and tests: it should stay a few hundred bytes). */
  lastSentBytes = 0
  /** Statuses sent, and intervals that sent nothing because nothing changed. */
  readonly counts = { sent: 0, skipped: 0 }

  constructor (private readonly components: StatusGossipComponents, private readonly init: StatusGossipInit, now: () => number = Date.now) {
    this.heartbeatMs = init.heartbeatMs ?? init.intervalMs * HEARTBEAT_INTERVALS
    this.now = now
  }

  start (): void {
    if (this.timer !== undefined) return
    this.timer = setInterval(() => { this.sendIfNews() }, this.init.intervalMs)
    this.timer.unref()
    this.sendNow()
  }

  /** Sends the status if it changed since the last one sent, or if that one is a heartbeat old. */
  sendIfNews (): void {
    this.sendNow(false)
  }

  stop (): void {
    clearInterval(this.timer)
    this.timer = undefined
  }

  /** Sends one status unless one is still being sent (a slow status() must not pile up sends). */
  sendNow (always = true): void {
    if (this.sending) return
    this.sending = true
    this.send(always)
      .catch(err => this.components.log.debug({ err }, 'status not sent'))
      .finally(() => { this.sending = false })
  }

  private async send (always: boolean): Promise<void> {
    const status = await this.components.localStatus()
    const fingerprint = statusFingerprint(status)
    if (!always && fingerprint === this.lastFingerprint && this.now() - this.lastSentAtMs < this.heartbeatMs) {
      this.counts.skipped++
      return
    }
    const bytes = encodeSiteStatus(status)
    this.lastSentBytes = bytes.byteLength
    await this.components.publish(bytes)
    this.lastFingerprint = fingerprint
    this.lastSentAtMs = this.now()
    this.counts.sent++
  }

  /** A status from `origin` (the gossipsub signer; undefined for an unsigned message, which is ignored). */
  receive (bytes: Uint8Array, origin: string | undefined): void {
    if (origin === undefined) { this.components.onResult?.('invalid'); return }
    try {
      this.components.onResult?.(this.components.view.ingest(origin, bytes))
    } catch (err) {
      // Not a strike: a status is informational, and a site running a newer format version must not get
      // itself disconnected from older ones. It is simply not shown.
      if (!(err instanceof InvalidMessageError)) throw err
      this.components.onResult?.('invalid')
      this.components.log.debug({ peer: origin, err }, 'ignoring undecodable status')
    }
  }
}
