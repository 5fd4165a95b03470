// Tells when anything under a source directory changes, with one inotify watch per directory.
//
// Node's fs.watch(dir, { recursive: true }) on Linux (20, 22 and 24 alike) adds one watch per file and per
// directory: measured on 20,000 files it held 20,205 inotify watches, and on 200,000 files it exhausted the
// user's whole fs.inotify.max_user_watches (192,540 on the test VM, shared by every process of the user) after
// 17 s and 4 s of CPU, at 453 MiB RSS. A directory's own watch already reports its entries being created,
// removed, renamed and written, so this watcher puts one on each directory (200,000 files in 2,040 directories:
// 2,041 watches) and adds one for each directory that appears.
//
// Events say only "something changed": the publisher rescans the tree anyway (stat-only for unchanged files),
// so no event needs to be exact. What an event cannot tell (a directory created and filled before its watch
// was added, events dropped on an inotify queue overflow) is caught by refresh(), which the caller runs at
// each publish: it walks the directories again and adds the missing watches. The source's parent is watched
// for the source itself being replaced (a `latest` symlink flipped to a new compose directory).
import { watch, type FSWatcher } from 'node:fs'
import { lstat, readdir } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'

/** Directories watched at most: far above a compose tree (tens of thousands), well under the kernel's default. */
export const DEFAULT_MAX_DIRS = 100_000

export interface TreeWatcherComponents {
  /** Anything under the root changed (or may have). */
  onChange: () => void
  /** A directory could not be watched (limit reached, permissions): changes under it may go unseen. */
  onError: (err: Error) => void
}

export class TreeWatcherLimitError extends Error {
  static override name = 'TreeWatcherLimitError'
  constructor (readonly root: string, readonly limit: number) {
    super(`${root}: more than ${limit} directories; changes in the others are seen only at the next publish`)
    this.name = 'TreeWatcherLimitError'
  }
}

export class TreeWatcher {
  private readonly watchers = new Map<string, FSWatcher>()
  private parent: FSWatcher | undefined
  private closed = false
  private limitReported = false

  constructor (private readonly root: string, private readonly c: TreeWatcherComponents, private readonly maxDirs = DEFAULT_MAX_DIRS) {}

  /** Directories watched now. */
  get dirs (): number { return this.watchers.size }

  async start (): Promise<void> {
    const name = basename(this.root)
    try {
      this.parent = watch(dirname(this.root), { persistent: false }, (_type, filename) => {
        if (filename !== null && filename.toString() === name) { this.c.onChange(); this.rebuild().catch(err => this.c.onError(err as Error)) }
      })
      this.parent.on('error', () => { this.parent?.close(); this.parent = undefined })
    } catch (err) {
      this.c.onError(err as Error)
    }
    await this.refresh()
  }

  /**
   * Walks the tree's directories (never through a symlink): watches those not watched, drops the watches of
   * those gone. Memory: the directory paths.
   */
  async refresh (): Promise<void> {
    const seen = new Set<string>()
    const queue = [this.root]
    while (queue.length > 0 && !this.closed) {
      const dir = queue.pop() as string
      seen.add(dir)
      if (!this.watchers.has(dir) && !this.add(dir)) continue
      const entries = await readdir(dir, { withFileTypes: true }).catch(() => [])
      for (const e of entries) if (e.isDirectory()) queue.push(join(dir, e.name))
    }
    for (const [dir, w] of this.watchers) if (!seen.has(dir)) { w.close(); this.watchers.delete(dir) }
  }

  /** The source was replaced (a symlink flipped, a directory renamed over it): every watch is on the old one. */
  private async rebuild (): Promise<void> {
    for (const w of this.watchers.values()) w.close()
    this.watchers.clear()
    await this.refresh()
  }

  close (): void {
    this.closed = true
    this.parent?.close()
    for (const w of this.watchers.values()) w.close()
    this.watchers.clear()
  }

  /** Watches one directory; false when it cannot be (gone, limit, no permission). */
  private add (dir: string): boolean {
    if (this.closed) return false
    if (this.watchers.size >= this.maxDirs) {
      if (!this.limitReported) this.c.onError(new TreeWatcherLimitError(this.root, this.maxDirs))
      this.limitReported = true
      return false
    }
    let w: FSWatcher
    try {
      w = watch(dir, { persistent: false }, (type, filename) => { this.onEvent(dir, type, filename?.toString() ?? null) })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.c.onError(err as Error)
      return false
    }
    // a watched directory removed (or moved away) ends its watch
    w.on('error', () => { w.close(); if (this.watchers.get(dir) === w) this.watchers.delete(dir); this.c.onChange() })
    this.watchers.set(dir, w)
    return true
  }

  private onEvent (dir: string, type: string, filename: string | null): void {
    this.c.onChange()
    if (type !== 'rename' || filename === null || this.closed) return
    const path = join(dir, filename)
    // a directory created or moved in: watch it and what it already holds
    lstat(path).then(async st => {
      if (st.isDirectory() && !this.watchers.has(path)) await this.watchSubtree(path)
    }, () => {
      // gone: a watched directory removed ends with an error or its own event
    }).catch(err => this.c.onError(err as Error))
  }

  private async watchSubtree (top: string): Promise<void> {
    const queue = [top]
    while (queue.length > 0 && !this.closed) {
      const dir = queue.pop() as string
      if (this.watchers.has(dir) || !this.add(dir)) continue
      const entries = await readdir(dir, { withFileTypes: true }).catch(() => [])
      for (const e of entries) if (e.isDirectory()) queue.push(join(dir, e.name))
    }
  }
}
