// Who may send how much, to whom, now. Every byte of chunk traffic passes two fair shapers: its link's
// (a named group of peers behind one WAN line, or the peer alone) and the agent's global one. Uploads are
// shared between the peers asking us (flow = peer); downloads between the trees we pull (flow = tree,
// weighted), so a lab's small pull is not stuck behind a large compose on either level.
// Rates come from config (base + schedule windows) unless overridden at runtime; schedules are
// re-evaluated every second, overrides apply at once.

import { DeltameshError } from '../../protocol/errors.js'
import { FairShaper, type FairShaperOptions, type FlowQueue } from './fair-shaper.js'
import { parseRate } from '../core/rate.js'
import { ratesAt, type Limits, type ScheduleWindow } from '../core/schedule.js'
import { emptyOverrides, type DirectionOverride, type LimitOverrides } from './overrides.js'
import { RateMeter } from './rate-meter.js'

export type Direction = 'up' | 'down'

export interface LinkSpec {
  name: string
  /** Peer ids. */
  peers: string[]
  base: Limits
  schedule: ScheduleWindow[]
}

export interface BandwidthInit {
  global: { base: Limits, schedule: ScheduleWindow[] }
  links: LinkSpec[]
  treeWeights?: Record<string, number>
  overrides?: LimitOverrides
  /** Stores the overrides after every runtime change (HOME/limits.json). */
  persist?: (overrides: LimitOverrides) => Promise<void>
  /** Name of a peer's own link when it is in no named link (its [[peers]] name, else its id). */
  peerLabel?: (peerId: string) => string
  /** Local wall-clock time, for schedules. */
  now?: () => Date
  /** Clock and timers of the shapers (tests run them in virtual time). */
  shaperClock?: Pick<FairShaperOptions, 'now' | 'setTimer' | 'clearTimer'>
  /** How often schedules are re-evaluated; 0 = only when tick() is called. */
  tickMs?: number
}

export type LinkKind = 'global' | 'link' | 'peer'

/** A limit in bytes/s, null when unlimited (JSON has no Infinity). */
export type RateValue = number | null

export interface LinkStatus {
  name: string
  kind: LinkKind
  peers: string[]
  /** In force now. */
  limit: { up: RateValue, down: RateValue }
  /** From config.toml, before schedule and overrides. */
  configured: { up: RateValue, down: RateValue }
  /** config.toml's windows: when (as written), and the rates in bytes/s (null: unlimited; absent: the base rate). */
  schedule: Array<{ window: string, up?: RateValue, down?: RateValue }>
  /** The schedule window in force now, if any. */
  window?: string
  /** Runtime overrides (`deltamesh limit`), as typed. */
  override?: DirectionOverride
  /** Bytes/s that passed over the last few seconds. */
  rate: { up: number, down: number }
  /** Requests waiting for bandwidth: per peer (up) and per tree (down). */
  queue: Array<FlowQueue & { direction: Direction }>
}

export interface LimitTarget { link?: string, peer?: string }

/** A runtime limit change (`deltamesh limit`): the global limits, or one named link, or one peer's own link. */
export interface LimitRequest extends LimitTarget {
  /** Rates as typed ('10MB/s', 'unlimited'); a direction left out keeps its current limit. */
  up?: string
  down?: string
  /** Back to config.toml (base and schedule) for the target. */
  reset?: boolean
}

export class LimitRequestError extends DeltameshError {
  static override name = 'LimitRequestError'
  constructor (message: string) {
    super(message)
    this.name = 'LimitRequestError'
  }
}

export class UnknownLinkError extends DeltameshError {
  static override name = 'UnknownLinkError'
  constructor (readonly link: string, known: string[]) {
    super(`No link named ${JSON.stringify(link)}; links: ${known.length === 0 ? '(none configured)' : known.join(', ')}`)
    this.name = 'UnknownLinkError'
  }
}

export class PeerInNamedLinkError extends DeltameshError {
  static override name = 'PeerInNamedLinkError'
  constructor (readonly peer: string, readonly link: string) {
    super(`Peer ${peer} is in link ${link}: set the link's limits with --link ${link}`)
    this.name = 'PeerInNamedLinkError'
  }
}

const toValue = (n: number): RateValue => Number.isFinite(n) ? n : null
const METER_SECONDS = 3

class Link {
  readonly up: FairShaper
  readonly down: FairShaper
  readonly upMeter: RateMeter
  readonly downMeter: RateMeter
  window?: ScheduleWindow
  override: DirectionOverride = {}

  constructor (
    readonly name: string,
    readonly kind: LinkKind,
    readonly peers: Set<string>,
    readonly base: Limits,
    readonly schedule: ScheduleWindow[],
    clock: BandwidthInit['shaperClock'],
  ) {
    this.up = new FairShaper({ rate: base.up, ...clock })
    this.down = new FairShaper({ rate: base.down, ...clock })
    const now = clock?.now
    this.upMeter = new RateMeter(METER_SECONDS, now === undefined ? Date.now : now)
    this.downMeter = new RateMeter(METER_SECONDS, now === undefined ? Date.now : now)
  }

  get unlimitedDown (): boolean { return !Number.isFinite(this.down.rate) }

  apply (at: Date): void {
    const scheduled = ratesAt(this.base, this.schedule, at)
    this.window = scheduled.window
    const up = this.override.up === undefined ? scheduled.up : parseRate(this.override.up)
    const down = this.override.down === undefined ? scheduled.down : parseRate(this.override.down)
    if (up !== this.up.rate) this.up.setRate(up)
    if (down !== this.down.rate) this.down.setRate(down)
  }

  status (): LinkStatus {
    const hasOverride = this.override.up !== undefined || this.override.down !== undefined
    return {
      name: this.name,
      kind: this.kind,
      peers: [...this.peers],
      limit: { up: toValue(this.up.rate), down: toValue(this.down.rate) },
      configured: { up: toValue(this.base.up), down: toValue(this.base.down) },
      schedule: this.schedule.map(w => ({ window: w.text, ...(w.up === undefined ? {} : { up: toValue(w.up) }), ...(w.down === undefined ? {} : { down: toValue(w.down) }) })),
      window: this.window?.text,
      override: hasOverride ? { ...this.override } : undefined,
      rate: { up: Math.max(0, this.upMeter.rate()), down: Math.max(0, this.downMeter.rate()) },
      queue: [
        ...this.up.queued().map(q => ({ ...q, direction: 'up' as const })),
        ...this.down.queued().map(q => ({ ...q, direction: 'down' as const })),
      ],
    }
  }

  close (): void { this.up.close(); this.down.close() }
}

export class BandwidthManager {
  private readonly global: Link
  private readonly named = new Map<string, Link>()
  private readonly linkOfPeer = new Map<string, Link>()
  /** Links of peers that are in no named link, created when first used. */
  private readonly own = new Map<string, Link>()
  private readonly overrides: LimitOverrides
  private readonly treeWeights = new Map<string, number>()
  private readonly configuredWeights: Record<string, number>
  private readonly now: () => Date
  private readonly timer?: ReturnType<typeof setInterval>

  constructor (private readonly init: BandwidthInit) {
    this.now = init.now ?? (() => new Date())
    this.overrides = structuredClone(init.overrides ?? emptyOverrides())
    this.global = new Link('global', 'global', new Set(), init.global.base, init.global.schedule, init.shaperClock)
    this.global.override = this.overrides.global ?? {}
    for (const spec of init.links) {
      const link = new Link(spec.name, 'link', new Set(spec.peers), spec.base, spec.schedule, init.shaperClock)
      link.override = this.overrides.links[spec.name] ?? {}
      this.named.set(spec.name, link)
      for (const peer of spec.peers) this.linkOfPeer.set(peer, link)
    }
    this.configuredWeights = init.treeWeights ?? {}
    for (const [tree, w] of Object.entries({ ...this.configuredWeights, ...this.overrides.treeWeights })) this.treeWeights.set(tree, w)
    for (const link of this.allLinks()) this.configureWeights(link)
    this.tick()
    const tickMs = init.tickMs ?? 1000
    if (tickMs > 0) {
      this.timer = setInterval(() => this.tick(), tickMs)
      this.timer.unref?.()
    }
  }

  private allLinks (): Link[] {
    return [this.global, ...this.named.values(), ...this.own.values()]
  }

  private configureWeights (link: Link): void {
    for (const [tree, w] of this.treeWeights) link.down.setWeight(tree, w)
  }

  /** The link a peer's traffic crosses: its named link, else its own. */
  linkOf (peer: string): Link {
    const named = this.linkOfPeer.get(peer)
    if (named !== undefined) return named
    let link = this.own.get(peer)
    if (link === undefined) {
      link = new Link(this.init.peerLabel?.(peer) ?? peer, 'peer', new Set([peer]), { up: Infinity, down: Infinity }, [], this.init.shaperClock)
      link.override = this.overrides.peers[peer] ?? {}
      this.configureWeights(link)
      link.apply(this.now())
      this.own.set(peer, link)
    }
    return link
  }

  /** Re-evaluates schedules (every second by default; tests call it after moving the clock). */
  tick (): void {
    const at = this.now()
    for (const link of this.allLinks()) link.apply(at)
  }

  /** Waits until `bytes` may be sent to `peer` (the sender paces what it serves). */
  async paceUpload (peer: string, bytes: number, signal?: AbortSignal): Promise<void> {
    const link = this.linkOf(peer)
    await link.up.take(peer, bytes, signal)
    await this.global.up.take(peer, bytes, signal)
    link.upMeter.add(bytes)
    this.global.upMeter.add(bytes)
  }

  /** Whether asking `peer` for chunks needs pacing at all (lets the caller skip splitting requests). */
  downloadLimited (peer: string): boolean {
    return !this.linkOf(peer).unlimitedDown || !this.global.unlimitedDown
  }

  /** Waits until `bytes` may be requested from `peer` for `tree` (the receiver paces what it asks for). */
  async paceDownload (peer: string, tree: string, bytes: number, signal?: AbortSignal): Promise<void> {
    const link = this.linkOf(peer)
    await link.down.take(tree, bytes, signal)
    await this.global.down.take(tree, bytes, signal)
    link.downMeter.add(bytes)
    this.global.downMeter.add(bytes)
  }

  /** Gives back what was paced for a request the peer did not answer with data. */
  refundDownload (peer: string, bytes: number): void {
    const link = this.linkOf(peer)
    link.down.refund(bytes)
    this.global.down.refund(bytes)
    link.downMeter.add(-bytes)
    this.global.downMeter.add(-bytes)
  }

  /**
   * Changes limits at runtime: `change` overrides the given directions (config and schedule no longer
   * apply to them); 'reset' returns the target to its configured limits. Applies at once and persists.
   */
  async setLimit (target: LimitTarget, change: DirectionOverride | 'reset'): Promise<LinkStatus> {
    if (change !== 'reset') {
      // validate before anything changes
      if (change.up !== undefined) parseRate(change.up)
      if (change.down !== undefined) parseRate(change.down)
    }
    const link = this.resolveTarget(target)
    const next: DirectionOverride = { ...link.override }
    if (change === 'reset') { delete next.up; delete next.down }
    if (change !== 'reset' && change.up !== undefined) next.up = change.up
    if (change !== 'reset' && change.down !== undefined) next.down = change.down
    const stored = Object.keys(next).length === 0 ? undefined : next
    if (link.kind === 'global') this.overrides.global = stored
    else if (link.kind === 'link') setOrDelete(this.overrides.links, link.name, stored)
    else setOrDelete(this.overrides.peers, [...link.peers][0] as string, stored)
    link.override = next
    link.apply(this.now())
    await this.init.persist?.(this.overrides)
    return link.status()
  }

  /** setLimit for a request as the CLI sends it. */
  async change (request: LimitRequest): Promise<LinkStatus> {
    if (request.link !== undefined && request.peer !== undefined) throw new LimitRequestError('give --link or --peer, not both')
    const target = { link: request.link, peer: request.peer }
    if (request.reset === true) {
      if (request.up !== undefined || request.down !== undefined) throw new LimitRequestError('--reset takes no --up or --down')
      return await this.setLimit(target, 'reset')
    }
    if (request.up === undefined && request.down === undefined) throw new LimitRequestError('give --up, --down or --reset')
    return await this.setLimit(target, { up: request.up, down: request.down })
  }

  /** Sets (or with undefined, resets to config) a tree's weight on every link. Persists. */
  async setTreeWeight (tree: string, weight: number | undefined): Promise<number> {
    if (weight !== undefined && !(weight > 0 && weight <= 1000)) throw new RangeError(`a tree weight is a number in (0, 1000], not ${weight}`)
    if (weight === undefined) delete this.overrides.treeWeights[tree]
    else this.overrides.treeWeights[tree] = weight
    const effective = weight ?? this.configuredWeights[tree] ?? 1
    for (const link of this.allLinks()) link.down.setWeight(tree, effective)
    if (effective === 1) this.treeWeights.delete(tree)
    else this.treeWeights.set(tree, effective)
    await this.init.persist?.(this.overrides)
    return effective
  }

  private resolveTarget (target: LimitTarget): Link {
    if (target.link !== undefined) {
      const link = this.named.get(target.link)
      if (link === undefined) throw new UnknownLinkError(target.link, [...this.named.keys()])
      return link
    }
    if (target.peer !== undefined) {
      const named = this.linkOfPeer.get(target.peer)
      if (named !== undefined) throw new PeerInNamedLinkError(target.peer, named.name)
      return this.linkOf(target.peer)
    }
    return this.global
  }

  /** Global first, then named links, then the peers' own links. */
  status (): LinkStatus[] {
    return this.allLinks().map(l => l.status())
  }

  weights (): Record<string, number> {
    return Object.fromEntries(this.treeWeights)
  }

  close (): void {
    if (this.timer !== undefined) clearInterval(this.timer)
    for (const link of this.allLinks()) link.close()
  }
}

function setOrDelete<T> (record: Record<string, T>, key: string, value: T | undefined): void {
  if (value === undefined) delete record[key]
  else record[key] = value
}
