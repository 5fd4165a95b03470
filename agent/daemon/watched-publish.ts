// [[publish]] sources with watch = true: each gets a TreeWatcher (one inotify watch per directory) and a
// PublishSchedule (quiet / maxDelay, one publish of a tree at a time), and is published through the agent's
// own publish (which also announces). At start every watched source is published once: what changed while the
// agent was down is caught up (an unchanged source publishes nothing: same root).
import type { AgentConfig } from '../core/config.js'
import { parseDuration } from '../core/duration.js'
import type { Logger } from '../core/log.js'
import { TreeWatcher } from '../publish/tree-watcher.js'
import { expandLabel, PublishSchedule } from '../publish/publish-schedule.js'
import type { PublishRequest, PublishSummary, WatchStatus } from '../api/api.js'

export interface WatchedPublishComponents {
  log: Logger
  publish: (request: PublishRequest, signal?: AbortSignal) => Promise<PublishSummary>
  /** The seq the tree's next version gets (for {seq} in labels). */
  nextSeq: (tree: string) => Promise<number>
  now?: () => number
}

interface Watched {
  entry: AgentConfig['publish'][number]
  watcher?: TreeWatcher
  schedule?: PublishSchedule
  watchError?: string
}

export class WatchedPublishes {
  private readonly watched: Watched[]

  constructor (private readonly c: WatchedPublishComponents, entries: AgentConfig['publish']) {
    this.watched = entries.map(entry => ({ entry }))
  }

  async start (): Promise<void> {
    for (const w of this.watched) if (w.entry.watch) await this.startOne(w)
  }

  private async startOne (w: Watched): Promise<void> {
    const { tree, src, label } = w.entry
    const log = this.c.log.child({ tree, src })
    const schedule = new PublishSchedule({
      quietMs: parseDuration(w.entry.quiet),
      maxDelayMs: parseDuration(w.entry.maxDelay),
      publish: async signal => {
        await w.watcher?.refresh()
        const summary = await this.c.publish({ tree, source: src, label: expandLabel(label, { seq: await this.c.nextSeq(tree), nowMs: (this.c.now ?? Date.now)() }) }, signal)
        return { seq: summary.seq, unchanged: summary.unchanged }
      },
      onPublished: o => { if (o.unchanged !== true) log.info({ seq: o.seq }, 'published on change') },
      onError: err => { log.warn({ err }, 'publish on change failed; retrying') },
    })
    const watcher = new TreeWatcher(src, {
      onChange: () => { schedule.changed() },
      onError: err => { w.watchError = err.message; log.warn({ err }, 'source not fully watched') },
    })
    w.schedule = schedule
    w.watcher = watcher
    await watcher.start()
    log.info({ dirs: watcher.dirs, quiet: w.entry.quiet, maxDelay: w.entry.maxDelay }, 'watching the source; publishing on change')
    schedule.now()
  }

  status (): WatchStatus[] {
    return this.watched.map(w => {
      const s = w.schedule?.state()
      const base = { tree: w.entry.tree, src: w.entry.src, quietMs: parseDuration(w.entry.quiet), maxDelayMs: parseDuration(w.entry.maxDelay), dirs: w.watcher?.dirs ?? 0, watchError: w.watchError }
      if (s === undefined) return { ...base, phase: 'off', changes: 0, publishes: 0 }
      return { ...base, phase: s.phase, pendingSinceMs: s.pendingSinceMs, dueAtMs: s.dueAtMs, changes: s.changes, publishes: s.publishes, last: s.last }
    })
  }

  async stop (): Promise<void> {
    for (const w of this.watched) {
      w.watcher?.close()
      await w.schedule?.stop()
    }
  }
}
