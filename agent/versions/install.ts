import { mkdir, readlink, rename, symlink, type FileHandle } from 'node:fs/promises'
import { dirname } from 'node:path'
import { InvalidMessageError, InvalidPathError } from '../../protocol/errors.js'
import type { FileEntry, SymlinkEntry, DirEntry } from '../../protocol/manifest.js'
import { bytesToPath, fsPath } from '../../protocol/paths.js'
import type { Logger } from '../core/log.js'
import type { HomeLayout } from '../core/home.js'
import type { Catalog, ChunkIndex, StoreRoot, VersionRecord, VersionStats } from '../store/types.js'
import { DiskFullError, ManifestError, MissingChunksError, StagingError, type VersionContext } from './errors.js'
import { ManifestBlobMissingError } from '../store/errors.js'
import { sameMillisecond, setFdTimes, setPathTimes } from '../fs/precise-times.js'
import { errnoOf, fsyncDir, lstatOrUndefined, openDir, openForRead, removeAny, safeJoin, STAGING_DIR_MODE } from '../fs/fs-safe.js'
import type { MaterializeInit } from './build-types.js'
import { walkSelected } from './walk.js'
import { sharedFsBatch, type FsBatch } from '../fs/fs-batch.js'
import { matches } from '../fs/fs-batch-ops.js'
import { PostOrderRunner } from './post-order.js'
import { DurabilityPlan, fsyncPath, syncFsViaCommand, type SyncFs } from '../fs/durability.js'
import { openTreePath } from '../fs/mirror-access.js'
import { flipToVersion } from './expose.js'

// The second half of building a version: everything after the last chunk is written. Order matters:
//   1. files: mode, mtime (usually set already, when the file's last chunk was written: then one lstat);
//      symlinks: created (never followed, never written through); directories: mode, mtime, each after
//      everything inside it (writing into a directory changes its mtime); steps of different files and
//      subtrees run concurrently (post-order.ts);
//   2. durability: every new file and directory on stable storage — a few by fsync each, many by one
//      syncfs of the staging filesystem (durability.ts) — before anything below can expose them;
//   3. rename staging → versions/<seq> (atomic, same filesystem), fsync both parents;
//   4. index root staging → version (locations follow without rewriting);
//   5. flip trees/<tree>/current (and a subscription's path) with a temporary link renamed over it;
//   6. catalog: VersionRecord complete with stats, TreeRecord.currentSeq.
// A crash before 3 leaves staging to resume and the previous version current (the resumed finalize flushes
// everything again, so files finished before the crash are covered); a crash after 3 is noticed by the next
// prepare() (version dir present, no staging) and steps 4–6, all idempotent, are redone.

/** The root directory of a version is traversable by readers (httpd, dnf); the manifest has no entry for it. */
const VERSION_ROOT_MODE = 0o755

/**
 * Files and directories finalized at once. A file is usually one lstat, and the lstats of the steps running
 * together go to the FsBatch worker in one message; the rarer slow steps (open, fstat, chmod) run on libuv's
 * threadpool, which this keeps busy. (fsyncs, when done one by one, overlap too: 3,000 fsyncs of new 4 KiB
 * files on this VM took 1.85 s one at a time and 0.81 s eight at a time.)
 */
const FINALIZE_CONCURRENCY = 64

export interface BuildContext {
  index: ChunkIndex
  catalog: Catalog
  home: HomeLayout
  log: Logger
  init: MaterializeInit
  root: StoreRoot
  /** The version dir is already in place (a crash after the rename); only steps 3–5 remain. */
  installed: boolean
  missingChunks: number
  missingBytes: number
  newChunks: number
  newBytes: number
  started: number
  /** Flushes the staging filesystem when many entries are new (default: syncfs via `sync -f`). */
  syncFs?: SyncFs
  /** Runs the one-syscall steps (a file's lstat); default the process's shared one. */
  fsBatch?: FsBatch
}

export async function finalizeVersion (ctx: BuildContext): Promise<VersionRecord> {
  const { tree, seq } = ctx.init
  const generation = ctx.init.generation ?? 0
  const versionDir = ctx.home.versionDir(tree, seq, generation)
  const stagingDir = ctx.home.stagingDir(tree, seq, generation)
  if (ctx.missingChunks > 0) throw new MissingChunksError({ tree, seq }, ctx.missingChunks, ctx.missingBytes)
  const context: VersionContext = { tree, seq }
  let totals: { files: number, bytes: number, chunks: number }
  try {
    const durability = new DurabilityPlan()
    totals = await finishEntries(ctx, ctx.installed ? versionDir : stagingDir, durability, context)
    if (!ctx.installed) await installStaging(ctx, stagingDir, versionDir, durability, context)
  } catch (err) {
    throw wrapError(context, err)
  }

  await ctx.index.updateRoot({ ...ctx.root, kind: 'version', path: versionDir, tree, seq })
  // the version is complete and its chunks served; a subscription's gate decides whether it is exposed
  const gate = ctx.init.gate === undefined ? undefined : await ctx.init.gate(versionDir)
  const exposed = gate?.outcome !== 'refused'
  const flipped = exposed ? await flipToVersion(ctx, tree, seq, generation) : undefined

  const existing = await ctx.catalog.getVersion(tree, seq)
  const envelope = existing?.envelope ?? ctx.init.envelope
  if (envelope === undefined) throw new StagingError({ tree, seq }, 'no envelope: neither the catalog nor the caller has one for this version')
  const stats: VersionStats = { ...totals, newBytes: ctx.newBytes, newChunks: ctx.newChunks, durationMs: Date.now() - ctx.started }
  const record: VersionRecord = { ...existing, tree, seq, envelope, state: 'complete', rootId: ctx.root.id, path: versionDir, stats, generation, selection: ctx.init.selection ?? existing?.selection, gate: gate ?? (generation > 0 ? existing?.gate : undefined) }
  if (generation === 0) delete record.generation
  if (record.gate === undefined) delete record.gate
  delete record.error
  await ctx.catalog.putVersion(record)
  if (flipped === undefined) {
    ctx.log.warn({ ...stats, path: versionDir, reason: gate?.reason }, 'version complete; the gate refused it: not exposed, the previous version stays served')
    return record
  }
  await ctx.catalog.putTree({ ...flipped.tree, currentSeq: seq })
  ctx.log.info({ ...stats, path: versionDir }, 'version complete; current link flipped')
  const subscriptionError = flipped.subscriptionError
  if (subscriptionError !== undefined) throw subscriptionError
  return record
}

/**
 * Every selected entry of the build gets its final mode and times (files and symlinks first, each directory
 * after its contents), and what must be flushed is noted; an installed version is only counted.
 */
async function finishEntries (ctx: BuildContext, base: string, durability: DurabilityPlan, context: VersionContext): Promise<{ files: number, bytes: number, chunks: number }> {
  const { tree, seq, signal } = ctx.init
  const totals = { files: 0, bytes: 0, chunks: 0 }
  const runner = new PostOrderRunner(FINALIZE_CONCURRENCY)
  const fs = ctx.fsBatch ?? sharedFsBatch()
  try {
    for await (const event of walkSelected(ctx.init.entries(), ctx.init.filter, ctx.installed ? undefined : signal)) {
      context.path = event.entry.path
      if (event.kind === 'file') {
        totals.files++
        totals.bytes += event.entry.size
        totals.chunks += event.entry.chunks.length
      }
      if (ctx.installed) continue
      const absolute = safeJoin(base, event.entry.path)
      // each step gets its own context: they finish out of walk order
      const at: VersionContext = { tree, seq, path: event.entry.path }
      if (event.kind === 'file') {
        const entry = event.entry
        await runner.file(async () => { await finishFile(fs, absolute, entry, at, durability) })
      } else if (event.kind === 'enter') {
        await checkRealDir(absolute, at)
        runner.enter()
      } else if (event.kind === 'symlink') {
        const entry = event.entry
        await runner.file(async () => { await finishSymlink(absolute, entry, at) })
      } else {
        const entry = event.entry
        await runner.leave(async () => { await finishDir(absolute, entry, at, durability) })
      }
    }
  } finally {
    // never leave steps running behind a failure or an abort: a retry must not race them
    await runner.settle().catch(() => {})
  }
  await runner.settle()
  context.path = undefined
  return totals
}

/** Staging made durable, then renamed into versions/ (the version becomes reachable complete or not at all). */
async function installStaging (ctx: BuildContext, stagingDir: string, versionDir: string, durability: DurabilityPlan, context: VersionContext): Promise<void> {
  const { tree, signal } = ctx.init
  signal?.throwIfAborted()
  // staging/ itself is private: the root opened here is unreachable until the rename below exposes it
  // complete (a crash in between leaves it behind a closed door too)
  const parent = await openDir(dirname(stagingDir))
  try { await parent.chmod(STAGING_DIR_MODE) } finally { await parent.close() }
  const handle = await openDir(stagingDir)
  try { await handle.chmod(VERSION_ROOT_MODE) } finally { await handle.close() }
  durability.add(stagingDir, true)
  const flushed = await durability.flush(stagingDir, ctx.syncFs ?? syncFsViaCommand, async () => { await fsyncEverything(ctx.init, stagingDir) }, signal)
  if (flushed.syncFsError !== undefined) ctx.log.warn({ err: flushed.syncFsError, entries: durability.entries }, 'syncfs failed; fsynced every entry instead')
  else ctx.log.debug({ how: flushed.how, entries: durability.entries }, 'staging durable')
  await mkdir(ctx.home.versionsDir(tree), { recursive: true })
  // the tree's dir and versions/ traversable whatever the umask: [mirror] decides at HOME/trees who gets in
  await openTreePath(ctx.home, tree)
  if (await lstatOrUndefined(versionDir) !== undefined) throw new StagingError(context, `${versionDir} already exists; refusing to replace it`)
  // past this point there is no abort: the install steps are short and each is idempotent
  await rename(stagingDir, versionDir)
  // the tree's top directory keeps the publisher's times, as rsync -a keeps them (its mode is [mirror]'s)
  const rootTimes = ctx.init.rootTimes
  if (rootTimes !== undefined) setPathTimes(versionDir, rootTimes.mtimeMs, rootTimes.mtimeNs, { noFollow: true })
  await fsyncDir(ctx.home.versionsDir(tree))
  await fsyncDir(dirname(stagingDir))
}

async function finishFile (fs: FsBatch, absolute: string, entry: FileEntry, context: VersionContext, durability: DurabilityPlan): Promise<void> {
  // A hardlink of the previous version's file (what prepare() makes of every unchanged file) already has the
  // manifest's size, mode and mtime, and its data was made durable when that version was installed: one
  // lstat instead of open, fstat, close. A file the materializer finished when its last chunk was written
  // (nlink 1) has them too and only needs flushing. Nothing is written through the path, so a symlink here
  // only falls through to the open below, which refuses it.
  const seen = await fs.run({ type: 'lstat', path: absolute }) ?? undefined
  if (matches(seen, entry)) {
    if (seen?.nlink === 1) durability.add(absolute, false)
    return
  }
  let handle
  try {
    handle = await openForRead(absolute)
  } catch (err) {
    throw new StagingError(context, `file is missing or not a regular file (${errnoOf(err) ?? 'error'})`, { cause: err })
  }
  try {
    const st = await handle.stat()
    if (!st.isFile() || st.size !== entry.size) throw new StagingError(context, `expected a ${entry.size}-byte file, found ${st.size} bytes`)
    // a hardlink from the previous version already has the right mode and mtime: leave its shared inode alone
    if ((st.mode & 0o7777) === entry.mode && sameMillisecond(st.mtimeMs, entry.mtimeMs) && st.nlink > 1) return
    await finishOpenFile(handle, entry)
  } finally {
    await handle.close()
  }
  // data and inode (size, mode, mtime) durable before the rename and the flip can be: a crash after the flip
  // must not show an empty or short file, nor a private staging mode
  durability.add(absolute, false)
}

/** A file's final mode and mtime, set through its open handle (never through a path that could be swapped). */
export async function finishOpenFile (handle: FileHandle, entry: Pick<FileEntry, 'mode' | 'mtimeMs' | 'mtimeNs'>): Promise<void> {
  await handle.chmod(entry.mode)
  setFdTimes(handle.fd, entry.mtimeMs, entry.mtimeNs)
}

/**
 * Files below are opened by path, and only their last component is O_NOFOLLOW: a directory of staging that is
 * no longer the directory prepare() made (swapped for a symlink, or a name that collides with a sibling's on a
 * case- or normalization-folding filesystem) would lead chmod/utimes outside the version. Checked on entering it.
 */
async function checkRealDir (absolute: string, context: VersionContext): Promise<void> {
  const st = await lstatOrUndefined(absolute)
  if (st?.isDirectory() !== true) {
    throw new StagingError(context, `expected the directory prepare() created, found ${st === undefined ? 'nothing' : st.isSymbolicLink() ? 'a symlink' : 'another kind of entry'} (tampering, or names that collide on this filesystem)`)
  }
}

/**
 * Created last-but-one (before directory mtimes); an existing link with the right target is kept, one with
 * another target replaced (unlinking a link never follows it). Anything else at the path was created for
 * another entry whose name folds to this one (or planted): refused, never deleted.
 */
async function finishSymlink (absolute: string, entry: SymlinkEntry, context: VersionContext): Promise<void> {
  const st = await lstatOrUndefined(absolute)
  if (st !== undefined && !st.isSymbolicLink()) {
    throw new StagingError(context, `a ${st.isDirectory() ? 'directory' : 'file'} is where the manifest wants a symlink (names that collide on this filesystem, or tampering); left in place`)
  }
  if (st === undefined || bytesToPath(await readlink(fsPath(absolute), { encoding: 'buffer' })) !== entry.target) {
    if (st !== undefined) await removeAny(absolute)
    await symlink(fsPath(entry.target), fsPath(absolute))
  }
  setPathTimes(absolute, entry.mtimeMs, entry.mtimeNs, { noFollow: true })
}

async function finishDir (absolute: string, entry: DirEntry, context: VersionContext, durability: DurabilityPlan): Promise<void> {
  let handle
  try {
    handle = await openDir(absolute)
  } catch (err) {
    throw new StagingError(context, `directory is missing or replaced (${errnoOf(err) ?? 'error'})`, { cause: err })
  }
  try {
    await handle.chmod(entry.mode)
    setFdTimes(handle.fd, entry.mtimeMs, entry.mtimeNs)
  } finally {
    await handle.close()
  }
  durability.add(absolute, true)
}

/**
 * The fallback when syncfs fails: fsync every file this build wrote (a hardlink of the previous version is
 * durable already) and every directory, as finalize did before syncfs. Bounded concurrency, one walk.
 */
async function fsyncEverything (init: MaterializeInit, stagingDir: string): Promise<void> {
  const runner = new PostOrderRunner(FINALIZE_CONCURRENCY)
  try {
    for await (const event of walkSelected(init.entries(), init.filter, init.signal)) {
      const absolute = safeJoin(stagingDir, event.entry.path)
      if (event.kind === 'file') {
        await runner.file(async () => {
          const st = await lstatOrUndefined(absolute)
          if (st?.isFile() === true && st.nlink === 1) await fsyncPath(absolute, false)
        })
      } else if (event.kind === 'enter') {
        runner.enter()
      } else if (event.kind === 'leave') {
        await runner.leave(async () => { await fsyncPath(absolute, true) })
      }
    }
  } finally {
    await runner.settle().catch(() => {})
  }
  await runner.settle()
  await fsyncPath(stagingDir, true)
}

/** Gives filesystem and manifest failures the version's context; other typed errors pass through. */
export function wrapError (context: VersionContext, err: unknown): unknown {
  if (err instanceof ManifestError || err instanceof DiskFullError || err instanceof StagingError) return err
  if (err instanceof InvalidMessageError || err instanceof InvalidPathError || err instanceof ManifestBlobMissingError) {
    const path = err instanceof InvalidPathError ? err.path : context.path
    return new ManifestError({ ...context, path }, err.message, { cause: err })
  }
  const code = errnoOf(err)
  if (code === 'ENOSPC' || code === 'EDQUOT') return new DiskFullError(context, { cause: err })
  return err
}
