// Rates for the dashboard, the status gossip and /metrics, computed from the cumulative per-peer byte
// counters (PeerStats) sampled at a fixed interval: no hook in the data path, so measuring costs nothing there.

export interface ByteCounters { bytesUp: number, bytesDown: number }
export interface Rates { up: number, down: number }
/** [sample time ms, upload bytes/s, download bytes/s] over the step ending at that time. */
export type RatePoint = [number, number, number]

export interface TrafficSamplerInit {
  /** Rates are averaged over this window (a 1-s rate of a bursty chunk stream jumps around). */
  windowMs?: number
  /** Points kept for the throughput plot (at one sample per second: 10 minutes). */
  historyPoints?: number
  now?: () => number
}

export const DEFAULT_RATE_WINDOW_MS = 5_000
export const DEFAULT_HISTORY_POINTS = 600

interface Sample { t: number, total: ByteCounters, peers: Map<string, ByteCounters> }

export class TrafficSampler {
  private readonly samples: Sample[] = []
  private readonly points: RatePoint[] = []
  private readonly windowMs: number
  private readonly historyPoints: number
  private readonly now: () => number

  constructor (init: TrafficSamplerInit = {}) {
    this.windowMs = init.windowMs ?? DEFAULT_RATE_WINDOW_MS
    this.historyPoints = init.historyPoints ?? DEFAULT_HISTORY_POINTS
    this.now = init.now ?? Date.now
  }

  /** Records the cumulative counters of every peer (the total is their sum). */
  sample (peers: Iterable<{ peerId: string } & ByteCounters>): void {
    const t = this.now()
    const map = new Map<string, ByteCounters>()
    const total = { bytesUp: 0, bytesDown: 0 }
    for (const p of peers) {
      map.set(p.peerId, { bytesUp: p.bytesUp, bytesDown: p.bytesDown })
      total.bytesUp += p.bytesUp
      total.bytesDown += p.bytesDown
    }
    const previous = this.samples.at(-1)
    if (previous !== undefined && t > previous.t) {
      const s = (t - previous.t) / 1000
      this.points.push([t, Math.max(0, (total.bytesUp - previous.total.bytesUp) / s), Math.max(0, (total.bytesDown - previous.total.bytesDown) / s)])
      if (this.points.length > this.historyPoints) this.points.splice(0, this.points.length - this.historyPoints)
    }
    this.samples.push({ t, total, peers: map })
    // keep one sample at or beyond the window's start, so the window is always fully covered
    while (this.samples.length > 2 && (this.samples[1] as Sample).t <= t - this.windowMs) this.samples.shift()
  }

  /** Average rate over the window, of one peer or (no argument) of all peers together. */
  rates (peerId?: string): Rates {
    const first = this.samples[0]
    const last = this.samples.at(-1)
    if (first === undefined || last === undefined || last.t <= first.t) return { up: 0, down: 0 }
    const of = (s: Sample): ByteCounters | undefined => peerId === undefined ? s.total : s.peers.get(peerId)
    const a = of(first) ?? { bytesUp: 0, bytesDown: 0 }
    const b = of(last)
    if (b === undefined) return { up: 0, down: 0 }
    const s = (last.t - first.t) / 1000
    // a counter that went backwards (agent restarted, peer re-added) is a fresh start, not a negative rate
    return { up: Math.max(0, (b.bytesUp - a.bytesUp) / s), down: Math.max(0, (b.bytesDown - a.bytesDown) / s) }
  }

  history (): RatePoint[] {
    return this.points.slice()
  }
}
