// Watches a running sync that is let finish although a newer version is known (sync-runner.ts supersedes): if
// it makes no progress (phase, bytes or chunks) for `stallMs`, `onStall` runs (the runner switches to the
// newest version). One watch per running sync, armed once: newer versions arriving meanwhile must not restart
// the clock. They did: a publisher publishing every 2 s re-armed the 15 s watch each time, so a sync stuck on a
// chunk nobody holds any more (an old version of a source edited in place) was never given up — the 1,000-
// version soak's rate-limited lab sat at seq 213 while the publisher went on to 325.

/** What a sync's progress looks like to the watch; the phases of local work (planning, finalizing, a gate) never stall. */
export function stallToken (p: { phase: string, bytesDone: number, chunksDone: number }, nowMs: number): string {
  // they report no bytes or chunks while they work (a walk of the tree, syncfs, a gate command), and on a busy
  // machine take longer than the stall time: giving them up aborted syncs about to finish, again and again
  if (p.phase === 'planning' || p.phase === 'finalizing') return `${p.phase}@${nowMs}`
  return `${p.phase}/${p.bytesDone}/${p.chunksDone}`
}

export class StallWatch<T extends object> {
  private watched: T | undefined
  private timer: ReturnType<typeof setTimeout> | undefined

  constructor (private readonly stallMs: number, private readonly onStall: (running: T) => void) {}

  /** Watches `running` (once; later calls for the same sync change nothing) while `isCurrent` says it still runs. */
  watch (running: T, progress: () => string, isCurrent: () => boolean): void {
    if (this.watched === running) return
    this.stop()
    this.watched = running
    let seen = progress()
    const check = (): void => {
      this.timer = undefined
      if (this.watched !== running || !isCurrent()) { this.watched = undefined; return }
      const now = progress()
      if (now === seen) { this.watched = undefined; this.onStall(running); return }
      seen = now
      this.arm(check)
    }
    this.arm(check)
  }

  /** The running sync ended (or the runner stops): nothing to watch. */
  stop (): void {
    clearTimeout(this.timer)
    this.timer = undefined
    this.watched = undefined
  }

  private arm (check: () => void): void {
    this.timer = setTimeout(check, this.stallMs)
    this.timer.unref?.()
  }
}
