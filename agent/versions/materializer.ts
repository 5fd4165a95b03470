import { mkdir } from 'node:fs/promises'
import { dirname } from 'node:path'
import { toHex, verifyChunkOnce, type ChunkId } from '../../protocol/chunk-id.js'
import type { FileEntry } from '../../protocol/manifest.js'
import { writeSkippingZeroBlocks } from './sparse-write.js'
import { silentLogger, type Logger } from '../core/log.js'
import type { PlacedChunk, StoreRoot, VersionRecord } from '../store/types.js'
import { MaterializerStateError, StagingError } from './errors.js'
import { createFile, errnoOf, lstatOrUndefined, removeAny, reopenPrivateFile, safeJoin, writeAt } from '../fs/fs-safe.js'
import { sharedFsBatch, type FsBatch } from '../fs/fs-batch.js'
import { finalizeVersion, finishOpenFile, wrapError, type BuildContext } from './install.js'
import { walkSelected } from './walk.js'
import { HandleCache } from './handle-cache.js'
import { FileAssembler, type WaitingFile } from './assemble.js'
import { QueuedSteps } from './queued-steps.js'
import { PreviousFiles } from './previous-files.js'
import { makeHardlinks } from './hardlinks.js'
import { SeedIndex } from './seed-index.js'

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

import type { MaterializerComponents, Seed, MaterializeInit, PlannedChunk, MaterializeProgress, PrepareStats, PreviousVersion } from './build-types.js'
export type { MaterializerComponents, Seed, PreviousVersion, MaterializeInit, Placement, PlannedChunk, MaterializeProgress, PrepareStats } from './build-types.js'

type State = 'new' | 'preparing' | 'prepared' | 'finalizing' | 'done'



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
  /** The index root was created by this prepare(): nothing is recorded under it, so files are recorded in batches. */
  private freshRoot = false
  private unindexed: Array<{ relPath: string, chunks: PlacedChunk[] }> = []
  /** Files with placements in the plan, by path (bounded by the plan: each has at least one planned chunk). */
  private readonly waiting = new Map<string, WaitingFile>()
  private readonly fs: FsBatch
  private steps = new QueuedSteps()
  private assembling = new QueuedSteps()
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
    this.assembler = new FileAssembler({
      index: components.index,
      signal: init.signal,
      log: this.log,
      plan: this.plan,
      stats: this.prepareStats,
      waiting: this.waiting,
      resuming: () => this.resuming,
      dirsReady: async () => { await this.dirsReady },
      rootId: () => (this.root as StoreRoot).id,
      context: () => this.context(),
      recordFile: async (relPath, chunks, deferred) => { await this.recordFile(relPath, chunks, deferred) },
    })
    this.seedIndex = new SeedIndex({ index: components.index, tree: init.tree, chunkFile: components.chunkFile, log: this.log, signal: init.signal })
  }

  private readonly assembler: FileAssembler
  private readonly seedIndex: SeedIndex

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
      const previous = this.init.previous !== undefined ? new PreviousFiles(this.init.previous.entries(), this.log, this.init.signal) : undefined
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
   * Writes a chunk of the plan to every placement and records it in the index. The bytes are hashed here
   * (identity is computed, never trusted) unless the chunk client hashed these very bytes on arrival: a mismatch throws ChunkHashMismatchError and writes
   * nothing. Returns false when the chunk is not (or no longer, or not yet) wanted.
   */
  async fill (id: ChunkId, bytes: Uint8Array): Promise<boolean> {
    if (this.state !== 'prepared') throw new MaterializerStateError(`fill() called in state ${this.state}`)
    verifyChunkOnce(id, bytes, `fill ${this.init.tree}@${this.init.seq}`)
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
          const copy = Uint8Array.prototype.slice.call(bytes) // moved to the worker, not cloned again
          await this.fs.run({ type: 'create', path: absolute, pieces: offsets.map(offset => ({ offset, bytes: copy })), mode: file.mode, mtimeMs: file.mtimeMs, mtimeNs: file.mtimeNs }, [copy.buffer as ArrayBuffer])
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
      if (!this.installed) await makeHardlinks({ fs: this.fs, stagingDir: this.stagingDir, entries: this.hardlinks, log: this.log, context: this.context(), signal: this.init.signal })
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

  private async prepareFile (entry: FileEntry, previous: PreviousFiles | undefined): Promise<void> {
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
    if (await previous?.unchanged(entry) === true) {
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
    this.assembling.add(this.assembler.assemble(entry, target, placed).then(async () => { await this.init.afterFile?.(entry.path) }, (err: unknown) => { throw wrapError(context, err) }))
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
      if (outcome !== 'absent') await this.seedIndex.add(seed, entry.path)
      this.unlinked.push({ entry, placed })
    }))
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


}

/** prepare() + finalize() for a build whose chunks are all local; throws MissingChunksError otherwise. */
export async function materializeLocal (components: MaterializerComponents, init: MaterializeInit): Promise<VersionRecord> {
  const m = new Materializer(components, init)
  await m.prepare()
  return await m.finalize()
}
