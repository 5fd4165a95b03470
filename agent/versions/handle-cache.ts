import type { FileHandle } from 'node:fs/promises'

interface Entry { handle: Promise<FileHandle | undefined>, refs: number, retire?: boolean }

/**
 * Keeps recently written staging files open while a sync fills them chunk by chunk: a 4 GiB image gets
 * tens of thousands of chunk writes, and reopening (open, fstat, close) for each one costs more than the
 * write. Handles in use are never closed under a writer (reference counts); past `max`, the least recently
 * used idle ones are closed. The Map's insertion order is the recency order (an acquire moves its entry to
 * the end), so eviction looks at the oldest entries only, instead of sorting all of them on every release.
 */
export class HandleCache {
  private readonly entries = new Map<string, Entry>()
  /** Closes started by eviction or retirement, awaited by closeAll() so that no close outlives the cache's user. */
  private readonly closing = new Set<Promise<void>>()

  constructor (private readonly max: number) {}

  /** The open handle for `key`, opening it with `open` if needed; undefined when `open` says so. */
  async acquire (key: string, open: () => Promise<FileHandle | undefined>): Promise<FileHandle | undefined> {
    let entry = this.entries.get(key)
    if (entry === undefined) {
      entry = { handle: open(), refs: 0 }
      const created = entry
      created.handle.then(h => { if (h === undefined && this.entries.get(key) === created) this.entries.delete(key) }, () => { if (this.entries.get(key) === created) this.entries.delete(key) })
    } else {
      this.entries.delete(key)
    }
    this.entries.set(key, entry)
    entry.refs++
    try {
      return await entry.handle
    } catch (err) {
      entry.refs--
      throw err
    }
  }

  /** An entry for `key` exists (open, opening, or held). */
  has (key: string): boolean { return this.entries.has(key) }

  /** Gives a handle back; `retire`: nothing more will be written to it, close it once no one holds it. */
  release (key: string, retire = false): void {
    const entry = this.entries.get(key)
    if (entry === undefined) return
    entry.refs--
    if (retire) entry.retire = true
    if (entry.retire === true && entry.refs <= 0) {
      this.entries.delete(key)
      this.close(entry)
      return
    }
    if (this.entries.size > this.max) this.evictIdle()
  }

  private close (entry: Entry): void {
    const closed = entry.handle.then(h => h?.close(), () => {}).catch(() => {}).finally(() => { this.closing.delete(closed) })
    this.closing.add(closed)
  }

  private evictIdle (): void {
    let excess = this.entries.size - this.max
    for (const [key, entry] of this.entries) {
      if (excess <= 0) break
      if (entry.refs > 0) continue
      this.entries.delete(key)
      excess--
      this.close(entry)
    }
  }

  /** Closes every handle (call when no writer is left: before finalize, on abort). */
  async closeAll (): Promise<void> {
    const all = [...this.entries.values()]
    this.entries.clear()
    await Promise.all(all.map(async e => { const h = await e.handle.catch(() => undefined); await h?.close() }))
    await Promise.all([...this.closing])
  }
}
