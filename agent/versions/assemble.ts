import type { FileHandle } from 'node:fs/promises'
import { toHex, verifyChunk } from '../../protocol/chunk-id.js'
import { isHoleChunk, type FileEntry } from '../../protocol/manifest.js'
import { isAllZero } from '../chunk/zeros.js'
import type { Logger } from '../core/log.js'
import { createFile, readAt, removeAny, reopenPrivateFile, writeAt, writevAt } from '../fs/fs-safe.js'
import type { ChunkIndex, PlacedChunk } from '../store/types.js'
import type { PlannedChunk, PrepareStats } from './build-types.js'
import { StagingError } from './errors.js'
import { finishOpenFile } from './install.js'
import { writeSkippingZeroBlocks } from './sparse-write.js'

// Assembling one file of a version from what this site already has: every chunk the index can supply is read
// (ahead, in runs) and written; the rest is planned for the network. Split from the materializer, whose
// state it uses through AssemblyHost.

/**
 * Local chunks of one file read ahead of its writes (by count and bytes): reads asked in one turn go to the
 * index's reader worker in one message, where a large file rebuilt from the previous version's chunks (an
 * image with bytes inserted) waited for each read, one message and one promise per chunk.
 */
const READ_AHEAD_CHUNKS = 16
export const READ_AHEAD_BYTES = 1024 * 1024

/**
 * A staging file still waiting for planned chunks. It is created by the first fill() that needs it when
 * prepare() had nothing to write into it (`created` false: a file made entirely of fetched chunks then costs
 * one open instead of three), and finished — final mode and mtime through the open handle — by the fill() that
 * writes its last placement, so finalize needs only an lstat of it. `sparse`: created here with holes and sized,
 * so its chunks are written leaving their all-zero blocks out (sparse-write.ts).
 */
export interface WaitingFile { mode: number, mtimeMs: number, mtimeNs?: number, pending: number, created: boolean, sparse?: boolean }

/** What assembling needs of the build it belongs to (the Materializer). */
export interface AssemblyHost {
  readonly index: ChunkIndex
  readonly signal?: AbortSignal
  readonly log: Logger
  /** Chunks still to come from the network, by hex id, with every place they go. */
  readonly plan: Map<string, PlannedChunk>
  readonly stats: PrepareStats
  readonly waiting: Map<string, WaitingFile>
  /** True when the staging directory existed already (an interrupted build is being resumed). */
  resuming: () => boolean
  /** Settles once the directory steps queued so far ran (a file's directory may be among them). */
  dirsReady: () => Promise<void>
  rootId: () => number
  context: () => { tree: string, seq: number, path?: string }
  recordFile: (relPath: string, chunks: PlacedChunk[], deferred: boolean) => Promise<void>
}

/** Local chunks of one file read ahead of its writes, by placement index (a chunk planned meanwhile wastes its read). */
class ReadAhead {
  private readonly reads = new Map<number, Promise<Uint8Array | undefined>>()
  private upTo = 0

  constructor (private readonly placed: PlacedChunk[], private readonly index: ChunkIndex, private readonly plan: Map<string, PlannedChunk>, private readonly signal?: AbortSignal) {}

  /** Starts reads from placement `from` on, up to READ_AHEAD_CHUNKS and READ_AHEAD_BYTES in flight. */
  from (from: number): void {
    let bytes = 0
    for (const r of this.reads.keys()) bytes += (this.placed[r] as PlacedChunk).size
    for (this.upTo = Math.max(this.upTo, from); this.upTo < this.placed.length && this.reads.size < READ_AHEAD_CHUNKS && bytes < READ_AHEAD_BYTES; this.upTo++) {
      const c = this.placed[this.upTo] as PlacedChunk
      if (isHoleChunk(c.id) || this.plan.has(toHex(c.id))) continue
      const read = this.index.readChunk(c.id, this.signal)
      read.catch(() => {}) // one never awaited (the file failed first) must not be an unhandled rejection
      this.reads.set(this.upTo, read)
      bytes += c.size
    }
  }

  /** The bytes of placement `i`: its read ahead, or a read now. */
  async take (i: number): Promise<Uint8Array | undefined> {
    const ahead = this.reads.get(i)
    this.reads.delete(i)
    return await (ahead ?? this.index.readChunk((this.placed[i] as PlacedChunk).id, this.signal))
  }

  drop (i: number): void { this.reads.delete(i) }

  /** Reads still ahead land before the file is given up (their bytes are dropped). */
  async settle (): Promise<void> { await Promise.allSettled(this.reads.values()) }
}

export class FileAssembler {
  constructor (private readonly host: AssemblyHost) {}

  /**
   * Writes every chunk of the file the index can supply and plans the rest. A fresh file is created only when
   * something is written into it here (a local chunk, or it is empty); one whose chunks all come from the
   * network is created by fill(). A file complete here is finished here (mode, mtime) while it is open.
   * A file with holes is created here and sized with ftruncate: its holes are the ranges nothing writes.
   */
  async assemble (entry: FileEntry, target: string, placed: PlacedChunk[]): Promise<void> {
    const index = this.host.index
    const s = this.host.stats
    let handle: FileHandle | undefined
    let fresh = !this.host.resuming()
    if (this.host.resuming()) {
      // a queued step may be creating this file's directory
      await this.host.dirsReady()
      handle = await reopenPrivateFile(target)
      if (handle === undefined) {
        await removeAny(target)
        fresh = true
      } else {
        // what an interrupted run left may be longer than the manifest says
        await handle.truncate(entry.size)
      }
    }
    // a fresh file reaches its exact size when its last chunk is written (finalize checks the size)
    const open = async (): Promise<FileHandle> => {
      if (handle === undefined) { await this.host.dirsReady(); handle = await createFile(target) }
      return handle
    }
    // a file with holes gets its size at once (ftruncate: the holes appear, unallocated), its last chunk may be one;
    // made here, its data chunks are written without their zero blocks (a resumed one is written whole)
    const sparse = fresh && entry.chunks.some(c => isHoleChunk(c.id))
    if (sparse) await (await open()).truncate(entry.size)
    const reads = new ReadAhead(placed, index, this.host.plan, this.host.signal)
    // local chunks that follow each other in the file, written together (one writev per run, up to 1 MiB)
    let run: { offset: number, end: number, buffers: Uint8Array[] } | undefined
    const writeRun = async (): Promise<void> => {
      if (run === undefined) return
      const { offset, buffers } = run
      run = undefined
      if (!sparse) { await writevAt(await open(), buffers, offset); return }
      let at = offset
      for (const b of buffers) { await writeSkippingZeroBlocks(await open(), b, at); at += b.byteLength }
    }
    try {
      const done: PlacedChunk[] = []
      let pending = 0
      for (const [i, c] of placed.entries()) {
        this.host.signal?.throwIfAborted()
        // a hole: never read, planned or written (the file was sized above, or truncated to size on resume)
        if (isHoleChunk(c.id)) { if (!fresh && handle !== undefined) await this.keepHoleZero(handle, entry.path, c); continue }
        const hex = toHex(c.id)
        if (!fresh && handle !== undefined && await this.placementDone(handle, entry.path, c)) { done.push(c); s.resumedChunks++; continue }
        const planned = this.host.plan.get(hex)
        if (planned !== undefined) { reads.drop(i); planned.placements.push({ relPath: entry.path, offset: c.offset }); pending++; continue }
        if (fresh) reads.from(i)
        const bytes = await reads.take(i)
        if (bytes === undefined) {
          // another file being assembled may have planned the same chunk while we looked
          const meanwhile = this.host.plan.get(hex)
          if (meanwhile !== undefined) meanwhile.placements.push({ relPath: entry.path, offset: c.offset })
          else this.host.plan.set(hex, { id: c.id, size: c.size, placements: [{ relPath: entry.path, offset: c.offset }] })
          pending++
          continue
        }
        if (bytes.byteLength !== c.size) throw new StagingError({ ...this.host.context(), path: entry.path }, `index returned ${bytes.byteLength} bytes for a ${c.size}-byte chunk`)
        if (run !== undefined && (run.end !== c.offset || run.end - run.offset >= READ_AHEAD_BYTES)) await writeRun()
        if (run === undefined) run = { offset: c.offset, end: c.offset, buffers: [] }
        run.buffers.push(bytes)
        run.end += c.size
        done.push(c)
        s.localChunks++
        s.localBytes += c.size
      }
      await writeRun()
      if (pending === 0) await finishOpenFile(await open(), entry)
      else this.host.waiting.set(entry.path, { mode: entry.mode, mtimeMs: entry.mtimeMs, mtimeNs: entry.mtimeNs, pending, created: handle !== undefined, ...(sparse ? { sparse } : {}) })
      if (done.length > 0 || !fresh) await this.host.recordFile(entry.path, done, false)
    } finally {
      // reads still ahead land before the file is given up (their bytes are dropped)
      await reads.settle()
      await handle?.close()
    }
  }

  /**
   * On resume: a hole's range must still read as zeros. This build never writes one, but the staging file may
   * be something else left behind (a seed's copy that failed to verify before a crash): then zeros are written.
   */
  private async keepHoleZero (handle: FileHandle, relPath: string, c: PlacedChunk): Promise<void> {
    if (isAllZero(await readAt(handle, c.offset, c.size))) return
    this.host.log.debug({ path: relPath, offset: c.offset }, 'a hole of a resumed file holds data; zeroing it')
    await writeAt(handle, Buffer.alloc(c.size), c.offset)
  }

  /** On resume: a placement counts as done when the index recorded it under our root and its bytes still verify. */
  private async placementDone (handle: FileHandle, relPath: string, c: PlacedChunk): Promise<boolean> {
    const rootId = this.host.rootId()
    const recorded = (await this.host.index.locations(c.id)).some(l => l.rootId === rootId && l.relPath === relPath && l.offset === c.offset)
    if (!recorded) return false
    const bytes = await readAt(handle, c.offset, c.size)
    try {
      verifyChunk(c.id, bytes)
      return true
    } catch {
      this.host.log.debug({ path: relPath, offset: c.offset }, 'recorded placement does not verify; rewriting it')
      return false
    }
  }
}
