// When a watched source is published: once it has been quiet for `quietMs` after its last change, or
// `maxDelayMs` after the first unpublished change however busy it stays; never two publishes of one tree at
// once (changes during a publish wait for it, then count from their own first change); a failed publish is
// retried after quietMs, doubling up to maxDelayMs. Timers and clock are injected: tests run in virtual time.

export type WatchPhase = 'idle' | 'pending' | 'publishing'

export interface PublishOutcome { seq: number, unchanged?: boolean }

export interface WatchState {
  phase: WatchPhase
  /** First change not yet published (ms since epoch). */
  pendingSinceMs?: number
  lastChangeMs?: number
  /** When the next publish is due, while pending. */
  dueAtMs?: number
  changes: number
  publishes: number
  last?: { atMs: number, seq?: number, unchanged?: boolean, error?: string }
}

export interface Timers {
  now: () => number
  setTimeout: (fn: () => void, ms: number) => unknown
  clearTimeout: (handle: unknown) => void
}

export const realTimers: Timers = {
  now: Date.now,
  setTimeout: (fn, ms) => { const t = setTimeout(fn, ms); t.unref(); return t },
  clearTimeout: handle => { clearTimeout(handle as ReturnType<typeof setTimeout>) },
}

export interface PublishScheduleInit {
  quietMs: number
  maxDelayMs: number
  /** Publishes the source; the schedule never calls it again before it settles. */
  publish: (signal: AbortSignal) => Promise<PublishOutcome>
  onPublished?: (outcome: PublishOutcome) => void
  onError?: (err: Error) => void
  timers?: Timers
}

export class PublishSchedule {
  private readonly t: Timers
  private readonly s: WatchState = { phase: 'idle', changes: 0, publishes: 0 }
  private timer: unknown
  private running: Promise<void> | undefined
  private readonly controller = new AbortController()
  private failures = 0
  private stopped = false

  constructor (private readonly init: PublishScheduleInit) {
    this.t = init.timers ?? realTimers
  }

  /** Something under the source changed. */
  changed (): void {
    if (this.stopped) return
    const now = this.t.now()
    this.s.changes++
    this.s.lastChangeMs = now
    this.s.pendingSinceMs ??= now
    if (this.running === undefined) this.arm()
  }

  /** Publish as soon as possible (at start: what changed while nothing watched). */
  now (): void {
    if (this.stopped) return
    const now = this.t.now()
    this.s.pendingSinceMs ??= now
    this.s.lastChangeMs = now - this.init.quietMs
    if (this.running === undefined) this.arm()
  }

  state (): WatchState {
    const phase: WatchPhase = this.running !== undefined ? 'publishing' : this.s.pendingSinceMs !== undefined ? 'pending' : 'idle'
    return { ...this.s, phase, last: this.s.last === undefined ? undefined : { ...this.s.last } }
  }

  /** Stops the timers and aborts a publish under way; resolves when it has settled. */
  async stop (): Promise<void> {
    this.stopped = true
    this.t.clearTimeout(this.timer)
    this.controller.abort(new Error('watch stopped'))
    await this.running
  }

  private arm (): void {
    this.t.clearTimeout(this.timer)
    const since = this.s.pendingSinceMs
    if (since === undefined || this.stopped) { this.s.dueAtMs = undefined; return }
    const backoff = this.failures === 0 ? 0 : Math.min(this.init.maxDelayMs, this.init.quietMs * 2 ** (this.failures - 1))
    const due = Math.max(Math.min((this.s.lastChangeMs ?? since) + this.init.quietMs, since + this.init.maxDelayMs), (this.s.last?.atMs ?? 0) + backoff)
    this.s.dueAtMs = due
    this.timer = this.t.setTimeout(() => { this.fire() }, Math.max(0, due - this.t.now()))
  }

  private fire (): void {
    if (this.running !== undefined || this.stopped || this.s.pendingSinceMs === undefined) return
    this.s.pendingSinceMs = undefined
    this.s.dueAtMs = undefined
    this.running = this.init.publish(this.controller.signal).then(outcome => {
      this.failures = 0
      this.s.publishes++
      this.s.last = { atMs: this.t.now(), seq: outcome.seq, unchanged: outcome.unchanged }
      this.init.onPublished?.(outcome)
    }, (err: Error) => {
      this.failures++
      this.s.last = { atMs: this.t.now(), error: err.message }
      // what was to be published still is: retried after the backoff
      this.s.pendingSinceMs ??= this.t.now()
      if (!this.stopped) this.init.onError?.(err)
    }).finally(() => {
      this.running = undefined
      this.arm()
    })
  }
}

/** Placeholders of a label template: {date} (UTC YYYYMMDD), {time} (UTC HHMMSS), {seq} (the version's seq). */
export const LABEL_PLACEHOLDERS = ['date', 'time', 'seq'] as const

/** Throws a TypeError for a placeholder that is not one of LABEL_PLACEHOLDERS. */
export function checkLabelTemplate (template: string): string {
  for (const m of template.matchAll(/\{([^}]*)\}/g)) {
    if (!(LABEL_PLACEHOLDERS as readonly string[]).includes(m[1] as string)) throw new TypeError(`label template: unknown {${m[1] as string}} (known: ${LABEL_PLACEHOLDERS.map(p => `{${p}}`).join(', ')})`)
  }
  return template
}

export function expandLabel (template: string, values: { seq: number, nowMs: number }): string {
  const iso = new Date(values.nowMs).toISOString()
  const date = iso.slice(0, 10).replace(/-/g, '')
  const time = iso.slice(11, 19).replace(/:/g, '')
  return checkLabelTemplate(template).replace(/\{(date|time|seq)\}/g, (_all, key: string) => key === 'date' ? date : key === 'time' ? time : String(values.seq))
}
