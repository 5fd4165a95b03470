import { mkdir } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { FileHandle } from 'node:fs/promises'
import { idsEqual, toHex, verifyChunk, type ChunkId } from '../../protocol/chunk-id.js'
import { comparePaths } from '../../protocol/paths.js'
import { isHoleChunk, type FileEntry, type ManifestEntry } from '../../protocol/manifest.js'
import { isAllZero } from '../chunk/zeros.js'
import { writeSkippingZeroBlocks } from './sparse-write.js'
import { silentLogger, type Logger } from '../core/log.js'
import type { PlacedChunk, StoreRoot, VersionRecord } from '../store/types.js'
import { MaterializerStateError, StagingError } from './errors.js'
import { createFile, errnoOf, lstatOrUndefined, readAt, removeAny, reopenPrivateFile, safeJoin, writeAt, writevAt } from '../fs/fs-safe.js'
import { sharedFsBatch, type FsBatch } from '../fs/fs-batch.js'
import { finalizeVersion, finishOpenFile, wrapError, type BuildContext } from './install.js'
import { ManifestCursor, walkSelected } from './walk.js'
import { HandleCache } from './handle-cache.js'

/** Staging files kept open between chunk writes (each costs one file descriptor). */
const MAX_OPEN_STAGING_FILES = 64
/**
 * Hardlinked files of a fresh staging root whose locations are recorded in one database write (prepare): per
 * file, a read of old locations and a write cost more than the hardlink itself. Bounds what a crash loses:
 * the next prepare finds those links in place and records them again.
 */
const INDEX_BATCH_FILES = 256
/**
 * Directory and hardlink steps of prepare() requested without waiting for each (FsBatch runs them in order,
 * a few hundred per message); past this many the walk waits for the oldest. Bounds memory, not order.
 */
const MAX_QUEUED_STEPS = 1024
/**
 * Files of prepare() that need chunks, assembled at once: their index lookups, made in the same turn, share one
 * database iterator (one per file cost ~0.1 ms each, most of a first sync's prepare). Bounds the local chunk
 * bytes held at once too.
 */
const MAX_ASSEMBLING = 32
/**
 * Local chunks of one file read ahead of its writes (by count and bytes): reads asked in one turn go to the
 * index's reader worker in one message, where a large file rebuilt from the previous version's chunks (an
 * image with bytes inserted) waited for each read, one message and one promise per chunk.
 */
const READ_AHEAD_CHUNKS = 16
const READ_AHEAD_BYTES = 1024 * 1024

import type { MaterializerComponents, Seed, MaterializeInit, PlannedChunk, MaterializeProgress, PrepareStats, PreviousVersion } from './build-types.js'
export type { MaterializerComponents, Seed, PreviousVersion, MaterializeInit, Placement, PlannedChunk, MaterializeProgress, PrepareStats } from './build-types.js'

type State = 'new' | 'preparing' | 'prepared' | 'finalizing' | 'done'

/**
 * A staging file still waiting for planned chunks. It is created by the first fill() that needs it when
 * prepare() had nothing to write into it (`created` false: a file made entirely of fetched chunks then costs
 * one open instead of three), and finished — final mode and mtime through the open handle — by the fill() that
 * writes its last placement, so finalize needs only an lstat of it. `sparse`: created here with holes and sized,
 * so its chunks are written leaving their all-zero blocks out (sparse-write.ts).
 */
interface WaitingFile { mode: number, mtimeMs: number, mtimeNs?: number, pending: number, created: boolean, sparse?: boolean }

/**
 * Steps of prepare() in flight (FsBatch): awaited in bulk — when too many are queued, before prepare() touches
 * the filesystem itself (a step may be creating the directory it writes into), and at the end. A failure is
 * kept and thrown by settle(); FsBatch finishes steps in the order they were queued, so waiting for the oldest
 * first waits for none longer than needed.
 */
class QueuedSteps {
  private readonly queue: Array<Promise<void>> = []
  private failure: { err: unknown } | undefined

  add (step: Promise<unknown>): void {
    this.queue.push(step.then(() => {}, (err: unknown) => { this.failure ??= { err } }))
  }

  get size (): number { return this.queue.length }

  /** Waits until at most `max` steps remain; throws the first failure. */
  async settle (max = 0): Promise<void> {
    while (this.queue.length > max) await this.queue.shift()
    if (this.failure !== undefined) throw this.failure.err
  }

  /** Waits for every step, never throwing (on the way out of a failure: nothing may run behind it). */
  async quiesce (): Promise<void> {
    while (this.queue.length > 0) await this.queue.shift()
  }
}

/**
 * Builds one version of a tree in its staging directory, in two phases so that the same code serves a
 * local build and a network sync:
 *
 *   prepare()  creates the staging tree, hardlinks unchanged files from the previous version, writes every
 *              chunk the index can supply, and returns the plan: the chunks nobody here has.
 *   fill()     writes a chunk of the plan (verified again) to all its placements; concurrent-safe.
 *   finalize() sets modes and mtimes, creates symlinks, fsyncs, renames staging into place and flips the
 *              tree's current link (see install.ts).
 *
 * Every chunk written into staging is recorded in the index at once, so peers can fetch it from us while
 * we are still syncing. Killed at any point, the next prepare() reuses what staging already holds.
 * Memory is bounded by the plan, never by file contents.
 */
export class Materializer {
  private readonly log: Logger
  private state: State = 'new'
  private root: StoreRoot | undefined
  private resuming = false
  private installed = false
  private readonly plan = new Map<string, PlannedChunk>()
  private readonly inflight = new Set<string>()
  private readonly handles = new HandleCache(MAX_OPEN_STAGING_FILES)
  private readonly progressValue: MaterializeProgress
  private readonly prepareStats: PrepareStats = { files: 0, bytes: 0, chunks: 0, linkedFiles: 0, seededFiles: 0, localChunks: 0, localBytes: 0, resumedChunks: 0 }
  private started = 0
  private currentPath: string | undefined
  private previousBroken = false
  /** The index root was created by this prepare(): nothing is recorded under it, so files are recorded in batches. */
  private freshRoot = false
  private unindexed: Array<{ relPath: string, chunks: PlacedChunk[] }> = []
  /** Files with placements in the plan, by path (bounded by the plan: each has at least one planned chunk). */
  private readonly waiting = new Map<string, WaitingFile>()
  private readonly fs: FsBatch
  private steps = new QueuedSteps()
  private assembling = new QueuedSteps()
  private seedRoot: Promise<StoreRoot> | undefined
  /** The last directory step queued: a file is only opened directly once it (and all before it) ran. */
  private dirsReady: Promise<void> = Promise.resolve()
  /** Files neither the previous version nor the seed could lend (changed since, link refused): built from chunks. */
  private unlinked: Array<{ entry: FileEntry, placed: PlacedChunk[] }> = []
  /**
   * Hardlinks of the version (entries with `linkTo` whose target this build makes too), linked at finalize
   * once every file is complete: a compose whose variants share packages by hardlink costs the disk once
   * here as at the publisher. `linkLeaders`: the linkable files this build makes.
   */
  private hardlinks: FileEntry[] = []
  private readonly linkLeaders = new Set<string>()

  constructor (private readonly components: MaterializerComponents, private readonly init: MaterializeInit) {
    this.log = (components.log ?? silentLogger()).child({ component: 'materializer', tree: init.tree, seq: init.seq })
    this.progressValue = { tree: init.tree, seq: init.seq, plannedChunks: 0, plannedBytes: 0, doneChunks: 0, doneBytes: 0 }
    this.fs = components.fsBatch ?? sharedFsBatch()
    this.stagingDir = components.home.stagingDir(init.tree, init.seq, init.generation)
  }

  /** Computed once: the home layout validates the tree name on every call, and fill() needs it per chunk. */
  readonly stagingDir: string
  get versionDir (): string { return this.components.home.versionDir(this.init.tree, this.init.seq, this.init.generation) }
  get stats (): Readonly<PrepareStats> { return this.prepareStats }
  get progress (): Readonly<MaterializeProgress> { return { ...this.progressValue } }
  /** The chunks still missing (a snapshot). */
  missing (): PlannedChunk[] { return [...this.plan.values()] }

  async prepare (): Promise<PlannedChunk[]> {
    if (this.state !== 'new') throw new MaterializerStateError(`prepare() called in state ${this.state}`)
    this.state = 'preparing'
    this.started = Date.now()
    this.plan.clear()
    this.waiting.clear()
    this.previousBroken = false
    Object.assign(this.prepareStats, { files: 0, bytes: 0, chunks: 0, linkedFiles: 0, seededFiles: 0, localChunks: 0, localBytes: 0, resumedChunks: 0 })
    const { signal } = this.init
    try {
      signal?.throwIfAborted()
      const staging = this.stagingDir
      if (await lstatOrUndefined(staging) === undefined && await lstatOrUndefined(this.versionDir) !== undefined) {
        // killed between the rename into place and the catalog update: the version is already built
        this.installed = true
        this.root = await this.findRoot() ?? await this.reindexInstalled()
        this.state = 'prepared'
        this.log.info('version directory already in place; only the install steps remain')
        return []
      }
      await mkdir(dirname(staging), { recursive: true })
      this.resuming = await this.createStagingDir(staging)
      const found = await this.findRoot()
      this.freshRoot = found === undefined
      this.unindexed = []
      this.root = found ?? await this.components.index.addRoot({ kind: 'staging', path: staging, tree: this.init.tree, seq: this.init.seq })
      this.log.debug({ resuming: this.resuming }, 'preparing')
      const previous = this.init.previous !== undefined ? new ManifestCursor(this.init.previous.entries(), comparePaths) : undefined
      this.unlinked = []
      this.hardlinks = []
      this.linkLeaders.clear()
      this.steps = new QueuedSteps()
      this.assembling = new QueuedSteps()
      this.dirsReady = Promise.resolve()
      try {
        for await (const event of walkSelected(this.init.entries(), this.init.filter, signal)) {
          this.currentPath = event.entry.path
          if (event.kind === 'enter') {
            const made = this.fs.run({ type: 'dir', path: safeJoin(staging, event.entry.path) })
            this.steps.add(made)
            this.dirsReady = made.then(() => {}, () => {})
          } else if (event.kind === 'file') {
            await this.prepareFile(event.entry, previous)
          }
          if (this.steps.size > MAX_QUEUED_STEPS) await this.steps.settle(MAX_QUEUED_STEPS / 2)
        }
        this.currentPath = undefined
        await this.steps.settle()
        await this.assembling.settle()
        for (const { entry, placed } of this.unlinked) {
          signal?.throwIfAborted()
          this.currentPath = entry.path
          await this.assembleNow(entry, safeJoin(staging, entry.path), placed)
        }
        this.unlinked = []
        await this.assembling.settle()
        await this.flushIndex()
        signal?.throwIfAborted()
      } finally {
        await this.steps.quiesce()
        await this.assembling.quiesce()
        await previous?.close()
      }
      this.currentPath = undefined
    } catch (err) {
      this.state = 'new'
      throw wrapError(this.context(), err)
    }
    this.state = 'prepared'
    this.progressValue.plannedChunks = this.plan.size
    this.progressValue.plannedBytes = [...this.plan.values()].reduce((n, c) => n + c.size, 0)
    this.log.info({ ...this.prepareStats, missingChunks: this.progressValue.plannedChunks, missingBytes: this.progressValue.plannedBytes }, 'prepared')
    return this.missing()
  }

  /**
   * Writes a chunk of the plan to every placement and records it in the index. The bytes are hashed
   * here (identity is computed, never trusted): a mismatch throws ChunkHashMismatchError and writes
   * nothing. Returns false when the chunk is not (or no longer, or not yet) wanted.
   */
  async fill (id: ChunkId, bytes: Uint8Array): Promise<boolean> {
    if (this.state !== 'prepared') throw new MaterializerStateError(`fill() called in state ${this.state}`)
    verifyChunk(id, bytes, `fill ${this.init.tree}@${this.init.seq}`)
    const hex = toHex(id)
    const planned = this.plan.get(hex)
    if (planned === undefined || this.inflight.has(hex)) return false
    this.inflight.add(hex)
    const root = this.root as StoreRoot
    let relPath: string | undefined
    try {
      const byFile = new Map<string, number[]>()
      for (const p of planned.placements) byFile.set(p.relPath, [...(byFile.get(p.relPath) ?? []), p.offset])
      for (const [path, offsets] of byFile) {
        relPath = path
        this.init.signal?.throwIfAborted()
        const absolute = safeJoin(this.stagingDir, path)
        const file = this.waiting.get(path)
        if (file !== undefined && !file.created && file.pending === offsets.length && !this.handles.has(absolute)) {
          // the whole file is this chunk (at one offset or several): created, written, finished and closed in one
          // step; an exact copy of the bytes, since a view would carry its whole batch buffer to the worker
          file.created = true
          const copy = Uint8Array.prototype.slice.call(bytes)
          await this.fs.run({ type: 'create', path: absolute, pieces: offsets.map(offset => ({ offset, bytes: copy })), mode: file.mode, mtimeMs: file.mtimeMs, mtimeNs: file.mtimeNs })
          file.pending = 0
          this.waiting.delete(path)
          continue
        }
        const handle = await this.handles.acquire(absolute, async () => {
          if (file === undefined || file.created) return await reopenPrivateFile(absolute)
          // nothing was there to write at prepare(): created now (O_EXCL, so nothing planted is reused)
          const created = await createFile(absolute)
          file.created = true
          return created
        })
        if (handle === undefined) throw new StagingError({ ...this.context(), path }, 'file vanished or was replaced since prepare()')
        let finished = false
        try {
          for (const offset of offsets) await (file?.sparse === true ? writeSkippingZeroBlocks(handle, bytes, offset) : writeAt(handle, bytes, offset))
          if (file !== undefined) {
            file.pending -= offsets.length
            if (file.pending === 0) {
              // its last bytes are in: final mode and mtime now, while it is open (finalize then only lstats it)
              try { await finishOpenFile(handle, file) } catch (err) { file.pending += offsets.length; throw err }
              finished = true
            }
          }
        } finally {
          // a finished file gets no more writes: its handle is closed as soon as no other fill() holds it
          this.handles.release(absolute, finished)
        }
        if (finished) this.waiting.delete(path)
      }
      await this.components.index.addLocations(id, planned.placements.map(p => ({ rootId: root.id, relPath: p.relPath, offset: p.offset, size: planned.size })))
    } catch (err) {
      throw wrapError({ ...this.context(), path: relPath }, err)
    } finally {
      this.inflight.delete(hex)
    }
    this.plan.delete(hex)
    this.progressValue.doneChunks++
    this.progressValue.doneBytes += planned.size
    this.init.onProgress?.(this.progress)
    return true
  }

  /** Closes the staging files kept open by fill(); call when giving up on (or pausing) this build. */
  async close (): Promise<void> {
    await this.handles.closeAll()
  }

  /** Completes the version; only when the plan is empty. See install.ts. */
  async finalize (): Promise<VersionRecord> {
    if (this.state !== 'prepared') throw new MaterializerStateError(`finalize() called in state ${this.state}`)
    if (this.inflight.size > 0) throw new MaterializerStateError('finalize() called while fill() calls are running')
    this.state = 'finalizing'
    await this.handles.closeAll()
    try {
      if (!this.installed) await this.makeHardlinks()
      const record = await finalizeVersion(this.buildContext())
      this.state = 'done'
      return record
    } catch (err) {
      this.state = 'prepared'
      throw err
    }
  }

  private buildContext (): BuildContext {
    return {
      ...this.components,
      log: this.log,
      init: this.init,
      root: this.root as StoreRoot,
      installed: this.installed,
      missingChunks: this.plan.size,
      missingBytes: [...this.plan.values()].reduce((n, c) => n + c.size, 0),
      newChunks: this.progressValue.doneChunks,
      newBytes: this.progressValue.doneBytes,
      started: this.started,
      syncFs: this.components.syncFs,
      fsBatch: this.fs,
    }
  }

  private context (): { tree: string, seq: number, path?: string } {
    return { tree: this.init.tree, seq: this.init.seq, path: this.currentPath }
  }

  /** True when the staging directory already existed (an earlier run was interrupted). */
  private async createStagingDir (staging: string): Promise<boolean> {
    try {
      await mkdir(staging, { mode: 0o700 })
      return false
    } catch (err) {
      if (errnoOf(err) !== 'EEXIST') throw err
    }
    const st = await lstatOrUndefined(staging)
    if (st?.isDirectory() !== true) throw new StagingError(this.context(), `${staging} exists and is not a directory`)
    return true
  }

  /** The version dir is in place but the index lost its root: register it and record its files' chunks (no reads). */
  private async reindexInstalled (): Promise<StoreRoot> {
    const { index } = this.components
    const root = await index.addRoot({ kind: 'version', path: this.versionDir, tree: this.init.tree, seq: this.init.seq })
    for await (const event of walkSelected(this.init.entries(), this.init.filter, this.init.signal)) {
      if (event.kind !== 'file') continue
      let offset = 0
      const placed = event.entry.chunks.map(c => { const p = { id: c.id, offset, size: c.size }; offset += c.size; return p })
      await index.indexFile(root.id, event.entry.path, placed)
    }
    return root
  }

  private async findRoot (): Promise<StoreRoot | undefined> {
    const roots = await this.components.index.listRoots()
    return roots.find(r => r.kind === 'staging' && r.path === this.stagingDir) ?? roots.find(r => r.kind === 'version' && r.path === this.versionDir)
  }

  /**
   * Each hardlink entry becomes a link to its target's staging file (complete, with its final mode and times);
   * a resumed build keeps one already made. Where the filesystem refuses a link (EMLINK, EPERM) the file is
   * copied from the target instead: the same bytes, one more inode.
   */
  private async makeHardlinks (): Promise<void> {
    for (const entry of this.hardlinks) {
      this.init.signal?.throwIfAborted()
      const source = safeJoin(this.stagingDir, entry.linkTo as string)
      const target = safeJoin(this.stagingDir, entry.path)
      const expect = { size: entry.size, mode: entry.mode, mtimeMs: entry.mtimeMs }
      try {
        const outcome = await this.fs.run({ type: 'link', source, target, expect, replace: true })
        if (outcome === 'linked') continue
        if (outcome === 'changed') throw new StagingError({ ...this.context(), path: entry.path }, `hardlink target ${JSON.stringify(entry.linkTo)} is not the complete file the manifest describes`)
        this.log.debug({ path: entry.path }, 'hardlink refused; copying the file instead')
        await this.fs.run({ type: 'adopt', source, target, size: entry.size, copy: true, replace: true })
        await this.fs.run({ type: 'finish', path: target, mode: entry.mode, mtimeMs: entry.mtimeMs, mtimeNs: entry.mtimeNs })
      } catch (err) {
        throw wrapError({ ...this.context(), path: entry.path }, err)
      }
    }
  }

  private async prepareFile (entry: FileEntry, previous: ManifestCursor | undefined): Promise<void> {
    if (entry.linkTo !== undefined && this.linkLeaders.has(entry.linkTo)) {
      // made at finalize, from the target this build makes (a filter that leaves the target out gets a file)
      this.hardlinks.push(entry)
      return
    }
    if (entry.linkable === true) this.linkLeaders.add(entry.path)
    const s = this.prepareStats
    s.files++
    s.bytes += entry.size
    s.chunks += entry.chunks.length
    const placed: PlacedChunk[] = []
    let offset = 0
    for (const c of entry.chunks) { placed.push({ id: c.id, offset, size: c.size }); offset += c.size }
    const target = safeJoin(this.stagingDir, entry.path)
    const before = await this.previousEntry(previous, entry.path)
    if (before?.type === 'file' && sameFile(before, entry)) {
      this.linkUnchanged(entry, target, placed)
      return
    }
    if (this.init.seed !== undefined && this.components.verifyFile !== undefined && entry.size > 0) {
      this.takeFromSeed(this.init.seed, entry, target, placed)
      return
    }
    await this.assembleNow(entry, target, placed)
  }

  /** Assembles a file (several at once: see MAX_ASSEMBLING). */
  private async assembleNow (entry: FileEntry, target: string, placed: PlacedChunk[]): Promise<void> {
    const context = { ...this.context(), path: entry.path }
    this.assembling.add(this.assembleFile(entry, target, placed).then(async () => { await this.init.afterFile?.(entry.path) }, (err: unknown) => { throw wrapError(context, err) }))
    if (this.assembling.size >= MAX_ASSEMBLING) await this.assembling.settle(MAX_ASSEMBLING / 2)
  }

  /**
   * A seed file of the right size is linked (or copied) into staging, then hashed there against the manifest:
   * one that does not verify is removed and the file is assembled like any other (after the walk).
   */
  private takeFromSeed (seed: Seed, entry: FileEntry, target: string, placed: PlacedChunk[]): void {
    const source = safeJoin(seed.dir, entry.path)
    const verifyFile = this.components.verifyFile as NonNullable<MaterializerComponents['verifyFile']>
    this.steps.add(this.fs.run({ type: 'adopt', source, target, size: entry.size, copy: seed.copy, replace: this.resuming }).then(async outcome => {
      if (outcome === 'linked' || outcome === 'copied') {
        if (await verifyFile(target, entry.chunks, this.init.signal)) {
          // the manifest's mode and mtime (on a linked file they are the seed's too: the same inode)
          await this.fs.run({ type: 'finish', path: target, mode: entry.mode, mtimeMs: entry.mtimeMs, mtimeNs: entry.mtimeNs })
          this.prepareStats.seededFiles++
          await this.recordFile(entry.path, placed, true)
          await this.init.afterFile?.(entry.path)
          return
        }
        await removeAny(target)
      }
      if (outcome !== 'absent') await this.indexSeedFile(seed, entry.path)
      this.unlinked.push({ entry, placed })
    }))
  }

  /** A seed file that is not the version's: its chunks, as the publisher would cut them, become local sources. */
  private async indexSeedFile (seed: Seed, relPath: string): Promise<void> {
    const chunkFile = this.components.chunkFile
    if (chunkFile === undefined) return
    this.seedRoot ??= this.findOrAddSeedRoot(seed)
    const root = await this.seedRoot
    try {
      const chunks = await chunkFile(safeJoin(seed.dir, relPath), seed.chunking, this.init.signal)
      await this.components.index.indexFile(root.id, relPath, chunks)
    } catch (err) {
      this.init.signal?.throwIfAborted()
      // a seed file that cannot be read lends nothing; the network has it
      this.log.debug({ path: relPath, err }, 'seed file not chunked')
    }
  }

  private async findOrAddSeedRoot (seed: Seed): Promise<StoreRoot> {
    const roots = await this.components.index.listRoots()
    return roots.find(r => r.kind === 'source' && r.path === seed.dir) ?? await this.components.index.addRoot({ kind: 'source', path: seed.dir, tree: this.init.tree })
  }

  /**
   * Hardlinks the previous version's file if it still looks like what its manifest says (queued: the walk goes
   * on; a file that cannot be linked is built from chunks after the walk).
   */
  private linkUnchanged (entry: FileEntry, target: string, placed: PlacedChunk[]): void {
    const source = safeJoin((this.init.previous as PreviousVersion).dir, entry.path)
    const expect = { size: entry.size, mode: entry.mode, mtimeMs: entry.mtimeMs }
    this.steps.add(this.fs.run({ type: 'link', source, target, expect, replace: this.resuming }).then(async outcome => {
      if (outcome === 'linked') {
        this.prepareStats.linkedFiles++
        await this.recordFile(entry.path, placed, true)
        await this.init.afterFile?.(entry.path)
        return
      }
      if (outcome === 'refused') this.log.debug({ path: entry.path }, 'hardlink refused; rebuilding the file from chunks')
      this.unlinked.push({ entry, placed })
    }))
  }

  /**
   * Records a file's chunks in the index. Under a fresh root nothing old must be read and replaced first;
   * a hardlink (`deferred`) is recorded with the next batch, since a crash costs only re-linking it (same
   * inode: one lstat), while chunks written into staging are recorded at once, so a resumed prepare keeps
   * them instead of writing them again.
   */
  private async recordFile (relPath: string, chunks: PlacedChunk[], deferred: boolean): Promise<void> {
    const rootId = (this.root as StoreRoot).id
    if (!this.freshRoot) { await this.components.index.indexFile(rootId, relPath, chunks); return }
    if (chunks.length === 0) return
    if (!deferred) { await this.components.index.indexNewFiles(rootId, [{ relPath, chunks }]); return }
    this.unindexed.push({ relPath, chunks })
    if (this.unindexed.length >= INDEX_BATCH_FILES) await this.flushIndex()
  }

  private async flushIndex (): Promise<void> {
    if (this.unindexed.length === 0) return
    const files = this.unindexed
    this.unindexed = []
    await this.components.index.indexNewFiles((this.root as StoreRoot).id, files)
  }

  /** The previous version's entry at `path`; a previous manifest that cannot be read only costs the hardlinks. */
  private async previousEntry (previous: ManifestCursor | undefined, path: string): Promise<ManifestEntry | undefined> {
    if (previous === undefined || this.previousBroken) return undefined
    try {
      return await previous.find(path)
    } catch (err) {
      this.init.signal?.throwIfAborted()
      this.previousBroken = true
      this.log.warn({ err }, 'previous manifest unreadable; building without hardlinks')
      return undefined
    }
  }

  /**
   * Writes every chunk of the file the index can supply and plans the rest. A fresh file is created only when
   * something is written into it here (a local chunk, or it is empty); one whose chunks all come from the
   * network is created by fill(). A file complete here is finished here (mode, mtime) while it is open.
   * A file with holes is created here and sized with ftruncate: its holes are the ranges nothing writes.
   */
  private async assembleFile (entry: FileEntry, target: string, placed: PlacedChunk[]): Promise<void> {
    const { index } = this.components
    const s = this.prepareStats
    let handle: FileHandle | undefined
    let fresh = !this.resuming
    if (this.resuming) {
      // a queued step may be creating this file's directory
      await this.dirsReady
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
      if (handle === undefined) { await this.dirsReady; handle = await createFile(target) }
      return handle
    }
    // a file with holes gets its size at once (ftruncate: the holes appear, unallocated), its last chunk may be one;
    // made here, its data chunks are written without their zero blocks (a resumed one is written whole)
    const sparse = fresh && entry.chunks.some(c => isHoleChunk(c.id))
    if (sparse) await (await open()).truncate(entry.size)
    // reads started ahead, by placement index (a chunk planned meanwhile wastes its read: it is dropped)
    const reads = new Map<number, Promise<Uint8Array | undefined>>()
    let readsUpTo = 0
    const readAhead = (from: number): void => {
      let bytes = 0
      for (const r of reads.keys()) bytes += (placed[r] as PlacedChunk).size
      for (readsUpTo = Math.max(readsUpTo, from); readsUpTo < placed.length && reads.size < READ_AHEAD_CHUNKS && bytes < READ_AHEAD_BYTES; readsUpTo++) {
        const c = placed[readsUpTo] as PlacedChunk
        if (isHoleChunk(c.id) || this.plan.has(toHex(c.id))) continue
        const read = index.readChunk(c.id, this.init.signal)
        read.catch(() => {}) // one never awaited (the file failed first) must not be an unhandled rejection
        reads.set(readsUpTo, read)
        bytes += c.size
      }
    }
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
        this.init.signal?.throwIfAborted()
        // a hole: never read, planned or written (the file was sized above, or truncated to size on resume)
        if (isHoleChunk(c.id)) { if (!fresh && handle !== undefined) await this.keepHoleZero(handle, entry.path, c); continue }
        const hex = toHex(c.id)
        if (!fresh && handle !== undefined && await this.placementDone(handle, entry.path, c)) { done.push(c); s.resumedChunks++; continue }
        const planned = this.plan.get(hex)
        if (planned !== undefined) { reads.delete(i); planned.placements.push({ relPath: entry.path, offset: c.offset }); pending++; continue }
        if (fresh) readAhead(i)
        const ahead = reads.get(i)
        reads.delete(i)
        const bytes = await (ahead ?? index.readChunk(c.id, this.init.signal))
        if (bytes === undefined) {
          // another file being assembled may have planned the same chunk while we looked
          const meanwhile = this.plan.get(hex)
          if (meanwhile !== undefined) meanwhile.placements.push({ relPath: entry.path, offset: c.offset })
          else this.plan.set(hex, { id: c.id, size: c.size, placements: [{ relPath: entry.path, offset: c.offset }] })
          pending++
          continue
        }
        if (bytes.byteLength !== c.size) throw new StagingError({ ...this.context(), path: entry.path }, `index returned ${bytes.byteLength} bytes for a ${c.size}-byte chunk`)
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
      else this.waiting.set(entry.path, { mode: entry.mode, mtimeMs: entry.mtimeMs, mtimeNs: entry.mtimeNs, pending, created: handle !== undefined, ...(sparse ? { sparse } : {}) })
      if (done.length > 0 || !fresh) await this.recordFile(entry.path, done, false)
    } finally {
      // reads still ahead land before the file is given up (their bytes are dropped)
      await Promise.allSettled(reads.values())
      await handle?.close()
    }
  }

  /**
   * On resume: a hole's range must still read as zeros. This build never writes one, but the staging file may
   * be something else left behind (a seed's copy that failed to verify before a crash): then zeros are written.
   */
  private async keepHoleZero (handle: FileHandle, relPath: string, c: PlacedChunk): Promise<void> {
    if (isAllZero(await readAt(handle, c.offset, c.size))) return
    this.log.debug({ path: relPath, offset: c.offset }, 'a hole of a resumed file holds data; zeroing it')
    await writeAt(handle, Buffer.alloc(c.size), c.offset)
  }

  /** On resume: a placement counts as done when the index recorded it under our root and its bytes still verify. */
  private async placementDone (handle: FileHandle, relPath: string, c: PlacedChunk): Promise<boolean> {
    const rootId = (this.root as StoreRoot).id
    const recorded = (await this.components.index.locations(c.id)).some(l => l.rootId === rootId && l.relPath === relPath && l.offset === c.offset)
    if (!recorded) return false
    const bytes = await readAt(handle, c.offset, c.size)
    try {
      verifyChunk(c.id, bytes)
      return true
    } catch {
      this.log.debug({ path: relPath, offset: c.offset }, 'recorded placement does not verify; rewriting it')
      return false
    }
  }
}

function sameFile (a: FileEntry, b: FileEntry): boolean {
  // the inode is shared: a link is only right when the times agree to the nanosecond too
  if (a.size !== b.size || a.mode !== b.mode || a.mtimeMs !== b.mtimeMs || (a.mtimeNs ?? 0) !== (b.mtimeNs ?? 0) || a.chunks.length !== b.chunks.length) return false
  for (let i = 0; i < a.chunks.length; i++) {
    const x = a.chunks[i] as FileEntry['chunks'][number]
    const y = b.chunks[i] as FileEntry['chunks'][number]
    if (x.size !== y.size || !idsEqual(x.id, y.id)) return false
  }
  return true
}

/** prepare() + finalize() for a build whose chunks are all local; throws MissingChunksError otherwise. */
export async function materializeLocal (components: MaterializerComponents, init: MaterializeInit): Promise<VersionRecord> {
  const m = new Materializer(components, init)
  await m.prepare()
  return await m.finalize()
}
