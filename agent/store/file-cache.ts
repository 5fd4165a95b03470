// A small LRU of open read-only FileHandles. Serving a version reads many chunks from the same files in a
// row; reopening the file for every 64 KiB chunk would double the syscalls. Handles are reference-counted so
// evicting one that a concurrent read still uses closes it only after that read finishes.
import { open, stat, type FileHandle } from 'node:fs/promises'

export const DEFAULT_MAX_OPEN_FILES = 64

/**
 * How old a cached handle's check may be before a hit re-stats the path. A handle keeps the inode it opened,
 * so a file replaced by rename or deleted would still be read (correct, verified bytes, but a location that
 * no longer exists on disk). One stat per file per interval bounds that staleness for little cost.
 */
export const DEFAULT_REVALIDATE_MS = 1000

interface Entry {
  handle: FileHandle
  refs: number
  evicted: boolean
  /** Group key (the root id) so a root's handles can be dropped when the root moves or goes. */
  group: number
  dev: number
  ino: number
  checkedAt: number
}

export interface FileHandleCacheInit {
  maxOpen?: number
  revalidateMs?: number
  now?: () => number
}

export interface Lease {
  handle: FileHandle
  /** True when the handle came from the cache (it may point at a file since replaced on disk). */
  cached: boolean
  release: () => Promise<void>
}

export class FileHandleCache {
  // Map iteration order is insertion order: delete + set on use makes the first key the least recent.
  private readonly entries = new Map<string, Entry>()
  private readonly closing = new Set<Promise<void>>()
  private closed = false

  private readonly maxOpen: number
  private readonly revalidateMs: number
  private readonly now: () => number

  constructor (init: FileHandleCacheInit = {}) {
    this.maxOpen = init.maxOpen ?? DEFAULT_MAX_OPEN_FILES
    this.revalidateMs = init.revalidateMs ?? DEFAULT_REVALIDATE_MS
    this.now = init.now ?? Date.now
  }

  async acquire (group: number, absPath: string): Promise<Lease> {
    if (this.closed) throw new Error('FileHandleCache is closed')
    let hit = this.entries.get(absPath)
    if (hit !== undefined && this.now() - hit.checkedAt >= this.revalidateMs) {
      const stillThere = await stat(absPath).then(st => st.dev === hit?.dev && st.ino === hit.ino, () => false)
      if (stillThere) hit.checkedAt = this.now()
      else {
        if (this.entries.get(absPath) === hit) this.evict(absPath)
        hit = undefined
      }
    }
    if (hit !== undefined && this.entries.get(absPath) === hit) {
      this.entries.delete(absPath)
      this.entries.set(absPath, hit)
      hit.refs++
      return { handle: hit.handle, cached: true, release: this.releaser(hit) }
    }
    const handle = await open(absPath, 'r')
    let st
    try {
      st = await handle.stat()
    } catch (err) {
      await handle.close()
      throw err
    }
    const entry: Entry = { handle, refs: 1, evicted: false, group, dev: st.dev, ino: st.ino, checkedAt: this.now() }
    // A concurrent acquire of the same path may have won the race; keep one handle in the cache.
    const raced = this.entries.get(absPath)
    if (raced !== undefined || this.closed || this.maxOpen === 0) {
      entry.evicted = true
    } else {
      this.entries.set(absPath, entry)
      this.trim()
    }
    return { handle, cached: false, release: this.releaser(entry) }
  }

  /** Forgets the handle of one file (it was found corrupt, or re-indexed). */
  evict (absPath: string): void {
    const entry = this.entries.get(absPath)
    if (entry === undefined) return
    this.entries.delete(absPath)
    this.retire(entry)
  }

  /** Forgets every handle of a root (it was renamed or removed). */
  evictGroup (group: number): void {
    for (const [path, entry] of this.entries) {
      if (entry.group === group) { this.entries.delete(path); this.retire(entry) }
    }
  }

  get size (): number { return this.entries.size }

  async close (): Promise<void> {
    this.closed = true
    for (const entry of this.entries.values()) this.retire(entry)
    this.entries.clear()
    // Handles still leased are closed by their release(); wait for the closes already started.
    await Promise.all([...this.closing])
  }

  private trim (): void {
    while (this.entries.size > this.maxOpen) {
      const oldest = this.entries.keys().next()
      if (oldest.done === true) return
      this.evict(oldest.value)
    }
  }

  private retire (entry: Entry): void {
    entry.evicted = true
    if (entry.refs === 0) this.closeHandle(entry)
  }

  /** A release function that counts once however often it is called. */
  private releaser (entry: Entry): () => Promise<void> {
    let released = false
    return async () => {
      if (released) return
      released = true
      entry.refs--
      if (entry.refs === 0 && entry.evicted) this.closeHandle(entry)
    }
  }

  private closeHandle (entry: Entry): void {
    // Close errors on a read-only handle carry no data loss; the handle is gone either way.
    const p: Promise<void> = entry.handle.close().catch(() => undefined).finally(() => this.closing.delete(p))
    this.closing.add(p)
  }
}
