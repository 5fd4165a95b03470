import type { FileHandle } from 'node:fs/promises'

interface Entry { handle: Promise<FileHandle | undefined>, refs: number, lastUsed: number }

/**
 * Keeps recently written staging files open while a sync fills them chunk by chunk: a 4 GiB image gets
 * tens of thousands of chunk writes, and reopening (lstat, open, fstat, close) for each one costs more
 * than the write. Handles in use are never closed under a writer (reference counts); the least recently
 * used idle ones are closed past `max`.
 */
export class HandleCache {
  private readonly entries = new Map<string, Entry>()
  private tick = 0

  constructor (private readonly max: number) {}

  /** The open handle for `key`, opening it with `open` if needed; undefined when `open` says so. */
  async acquire (key: string, open: () => Promise<FileHandle | undefined>): Promise<FileHandle | undefined> {
    let entry = this.entries.get(key)
    if (entry === undefined) {
      entry = { handle: open(), refs: 0, lastUsed: 0 }
      this.entries.set(key, entry)
      entry.handle.then(h => { if (h === undefined) this.entries.delete(key) }, () => this.entries.delete(key))
    }
    entry.refs++
    entry.lastUsed = ++this.tick
    try {
      return await entry.handle
    } catch (err) {
      entry.refs--
      throw err
    }
  }

  release (key: string): void {
    const entry = this.entries.get(key)
    if (entry === undefined) return
    entry.refs--
    if (this.entries.size > this.max) this.evictIdle()
  }

  private evictIdle (): void {
    const idle = [...this.entries.entries()].filter(([, e]) => e.refs === 0).sort((a, b) => a[1].lastUsed - b[1].lastUsed)
    for (const [key, entry] of idle.slice(0, this.entries.size - this.max)) {
      this.entries.delete(key)
      entry.handle.then(h => h?.close(), () => {}).catch(() => {})
    }
  }

  /** Closes every handle (call when no writer is left: before finalize, on abort). */
  async closeAll (): Promise<void> {
    const all = [...this.entries.values()]
    this.entries.clear()
    await Promise.all(all.map(async e => { const h = await e.handle.catch(() => undefined); await h?.close() }))
  }
}
