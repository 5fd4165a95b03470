import { execFile } from 'node:child_process'
import { constants } from 'node:fs'
import { open } from 'node:fs/promises'
import { fsPath } from '../../protocol/paths.js'

// How finalize makes a staging tree durable before the rename that publishes it (docs/design-notes.md,
// "Durability of a new version"). fsync per file costs open + fsync + close on libuv's threadpool for every
// new file — on a tree of 200,000 small files that, not the bytes, is the work. Instead finalize records the
// entries that still need flushing here: up to FSYNC_EACH_MAX of them are fsynced one by one at the end (a
// small update should not flush the whole filesystem); past that the list is dropped and one syncfs(2) of
// the staging filesystem covers every file and directory written, at any count, in bounded memory.

/** New files and directories fsynced one by one at most; more go through one syncfs. */
export const FSYNC_EACH_MAX = 64
/** fsyncs of the short list running at once (the disk serves overlapping flushes together). */
const FSYNC_CONCURRENCY = 16

const FILE_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW
const DIR_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_DIRECTORY

/** Flushes one filesystem (the one holding `path`): resolves once its data and metadata are on stable storage. */
export type SyncFs = (path: string, signal?: AbortSignal) => Promise<void>

/**
 * syncfs(2) through coreutils' `sync -f` (Node has no binding for it). Linux ≥ 5.8 reports writeback errors
 * of the filesystem that no one has seen yet; a failure to spawn, a non-zero exit or another platform rejects,
 * and the caller falls back to an fsync of every entry.
 */
export const syncFsViaCommand: SyncFs = async (path, signal) => {
  if (process.platform !== 'linux') throw new Error('syncfs is Linux only')
  await new Promise<void>((resolve, reject) => {
    execFile('sync', ['-f', '--', path], { signal, timeout: 0 }, (err, _stdout, stderr) => {
      if (err === null) resolve()
      else reject(new Error(`sync -f ${path} failed: ${stderr.trim() || err.message}`, { cause: err }))
    })
  })
}

export async function fsyncPath (path: string, dir: boolean): Promise<void> {
  const handle = await open(fsPath(path), dir ? DIR_FLAGS : FILE_FLAGS)
  try { await handle.sync() } finally { await handle.close() }
}

/**
 * The entries of one finalize that must reach the disk before the rename. Bounded: a short list, or a flag.
 * Entries are only ever opened read-only with O_NOFOLLOW to flush them, never written.
 */
export class DurabilityPlan {
  private short: Array<{ path: string, dir: boolean }> | undefined = []
  private count = 0

  constructor (private readonly max: number = FSYNC_EACH_MAX) {}

  /** `path` (a new file, or a directory) was changed and is not yet known to be on disk. */
  add (path: string, dir: boolean): void {
    this.count++
    if (this.short === undefined) return
    if (this.short.length >= this.max) { this.short = undefined; return }
    this.short.push({ path, dir })
  }

  get entries (): number { return this.count }
  /** True when the list overflowed: only a whole-filesystem flush (or an fsync of everything) covers it. */
  get needsFilesystemSync (): boolean { return this.short === undefined }

  /**
   * Makes every added entry durable: the short list by fsync, otherwise `syncFs(root)`; when that fails,
   * `fsyncAll` (a walk that fsyncs every entry again). Returns how it was done and why syncfs failed, for the log.
   */
  async flush (root: string, syncFs: SyncFs, fsyncAll: () => Promise<void>, signal?: AbortSignal): Promise<{ how: 'fsync' | 'syncfs' | 'fsync-all', syncFsError?: unknown }> {
    if (this.short !== undefined) {
      const list = this.short
      for (let i = 0; i < list.length; i += FSYNC_CONCURRENCY) {
        signal?.throwIfAborted()
        await Promise.all(list.slice(i, i + FSYNC_CONCURRENCY).map(async e => { await fsyncPath(e.path, e.dir) }))
      }
      return { how: 'fsync' }
    }
    try {
      await syncFs(root, signal)
      return { how: 'syncfs' }
    } catch (err) {
      signal?.throwIfAborted()
      await fsyncAll()
      return { how: 'fsync-all', syncFsError: err }
    }
  }
}
