// Keeps the configured sites connected: dial on start, redial with exponential backoff and jitter after a
// failed dial or a disconnect. The backoff schedule and the random source are settings, so tests run fast.
// A site listed by /p2p/<peer id> alone only dials out (it has no address): it is known here, never dialled.
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Libp2p, PeerId } from '@libp2p/interface'

/** 1 s doubling to 5 min: a restarting site is back within seconds, a dead one costs a dial every 5 min. */
export const DEFAULT_BACKOFFS_MS = [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 300_000]
/** ±20 %: sites restarted together do not redial each other in lockstep. */
export const DEFAULT_JITTER = 0.2
export const DEFAULT_DIAL_TIMEOUT_MS = 15_000

export interface DialerComponents {
  libp2p: Pick<Libp2p, 'dial' | 'getConnections' | 'addEventListener' | 'removeEventListener' | 'logger'>
}

export interface DialerInit {
  /** Multiaddrs ending in /p2p/<peer id>. */
  peers?: Array<string | Multiaddr>
  backoffsMs?: number[]
  /** Fraction of each delay added or removed at random. */
  jitter?: number
  random?: () => number
  dialTimeoutMs?: number
  /** End of a peer's ban (ms since epoch), or undefined: a banned peer is redialled only once its ban is over. */
  bannedUntil?: (peerId: string) => number | undefined
  now?: () => number
}

interface Target {
  peerId: PeerId
  addrs: Multiaddr[]
  attempt: number
  timer?: ReturnType<typeof setTimeout>
  dialing: boolean
}

export class Dialer {
  private readonly log
  private readonly targets = new Map<string, Target>()
  private readonly backoffs: number[]
  private readonly jitter: number
  private readonly random: () => number
  private readonly dialTimeoutMs: number
  private readonly bannedUntil: (peerId: string) => number | undefined
  private readonly now: () => number
  private readonly controller = new AbortController()
  private running = false

  constructor (private readonly components: DialerComponents, init: DialerInit = {}) {
    this.log = components.libp2p.logger.forComponent('deltamesh:dialer')
    this.backoffs = init.backoffsMs ?? DEFAULT_BACKOFFS_MS
    if (this.backoffs.length === 0) throw new TypeError('backoffsMs must not be empty')
    this.jitter = init.jitter ?? DEFAULT_JITTER
    this.random = init.random ?? Math.random
    this.dialTimeoutMs = init.dialTimeoutMs ?? DEFAULT_DIAL_TIMEOUT_MS
    this.bannedUntil = init.bannedUntil ?? (() => undefined)
    this.now = init.now ?? Date.now
    for (const p of init.peers ?? []) this.addTarget(p)
    this.onDisconnect = this.onDisconnect.bind(this)
  }

  async start (): Promise<void> {
    if (this.running) return
    this.running = true
    this.components.libp2p.addEventListener('peer:disconnect', this.onDisconnect)
    for (const t of this.targets.values()) this.dialNow(t)
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    this.controller.abort()
    this.components.libp2p.removeEventListener('peer:disconnect', this.onDisconnect)
    for (const t of this.targets.values()) { clearTimeout(t.timer); t.timer = undefined }
  }

  /** Adds a site at runtime (or another address of a known site) and dials it if running. Returns its peer id. */
  add (addr: string | Multiaddr): PeerId {
    const t = this.addTarget(addr)
    if (this.running && t.timer === undefined) this.dialNow(t)
    return t.peerId
  }

  /** Stops keeping a site connected (does not hang up). */
  remove (peerId: PeerId | string): void {
    const key = peerId.toString()
    const t = this.targets.get(key)
    if (t === undefined) return
    clearTimeout(t.timer)
    this.targets.delete(key)
  }

  peers (): string[] {
    return [...this.targets.keys()]
  }

  /** Delay before retry number `attempt` (0-based), jitter applied. Exposed for tests. */
  delay (attempt: number): number {
    const base = this.backoffs[Math.min(attempt, this.backoffs.length - 1)] as number
    return Math.max(0, Math.round(base * (1 + this.jitter * (2 * this.random() - 1))))
  }

  private addTarget (addr: string | Multiaddr): Target {
    const ma = typeof addr === 'string' ? multiaddr(addr) : addr
    const id = ma.getComponents().findLast(c => c.name === 'p2p')?.value
    if (id === undefined) throw new TypeError(`${ma.toString()} has no /p2p/<peer id>`)
    const peerId = peerIdFromString(id)
    const key = peerId.toString()
    let t = this.targets.get(key)
    if (t === undefined) {
      t = { peerId, addrs: [], attempt: 0, dialing: false }
      this.targets.set(key, t)
    }
    // /p2p/<id> alone: a site that only dials out; it is listed (the gater admits it) but there is nothing to dial
    if (isDialable(ma) && !t.addrs.some(a => a.equals(ma))) t.addrs.push(ma)
    return t
  }

  private onDisconnect (evt: CustomEvent<PeerId>): void {
    const t = this.targets.get(evt.detail.toString())
    if (t === undefined || !this.running || t.addrs.length === 0) return
    this.log('lost %p, redialling', t.peerId)
    t.attempt = 0
    this.schedule(t)
  }

  private schedule (t: Target): void {
    if (!this.running || t.timer !== undefined || !this.targets.has(t.peerId.toString())) return
    const until = this.bannedUntil(t.peerId.toString())
    // a banned peer is not worth a dial (the gater would refuse it): wake up when the ban ends, backoff reset
    const ms = until !== undefined ? Math.max(0, until - this.now()) + this.delay(0) : this.delay(t.attempt)
    if (until !== undefined) { t.attempt = 0; this.log('%p is banned; next dial in %d ms', t.peerId, ms) } else t.attempt++
    t.timer = setTimeout(() => { t.timer = undefined; this.dialNow(t) }, ms)
    t.timer.unref?.()
  }

  private dialNow (t: Target): void {
    if (!this.running || t.dialing || t.addrs.length === 0) return
    if (this.bannedUntil(t.peerId.toString()) !== undefined) { this.schedule(t); return }
    if (this.components.libp2p.getConnections(t.peerId).length > 0) { t.attempt = 0; return }
    t.dialing = true
    const signal = AbortSignal.any([this.controller.signal, AbortSignal.timeout(this.dialTimeoutMs)])
    this.dialAny(t, signal)
      .then(() => {
        t.attempt = 0
        this.log('connected to %p', t.peerId)
      }, err => {
        this.log('dial %p failed (attempt %d) - %e', t.peerId, t.attempt + 1, err)
        this.schedule(t)
      })
      .finally(() => { t.dialing = false })
  }

  private async dialAny (t: Target, signal: AbortSignal): Promise<void> {
    let last: unknown
    for (const addr of t.addrs) {
      try {
        await this.components.libp2p.dial(addr, { signal })
        return
      } catch (err) {
        last = err
        if (signal.aborted) break
      }
    }
    throw last
  }
}

/** An address with a transport to dial, not just /p2p/<peer id>. */
function isDialable (ma: Multiaddr): boolean {
  return ma.getComponents().some(c => c.name === 'tcp')
}
