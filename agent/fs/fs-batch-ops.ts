import { closeSync, constants, copyFileSync, fchmodSync, fstatSync, linkSync, lstatSync, mkdirSync, openSync, readSync, rmSync, writeSync, type Stats } from 'node:fs'
import { chunkIdOf, idsEqual } from '../../protocol/chunk-id.js'
import { fsPath } from '../../protocol/paths.js'
import type { SerializedError } from '../core/workers.js'
import { settled, stampOf, vouches } from './file-stamp.js'
import { CREATE_FLAGS, DIR_FLAGS, STAGING_DIR_MODE, STAGING_FILE_MODE, errnoOf } from './fs-safe.js'
import { sameMillisecond, setFdTimes } from './precise-times.js'

// The filesystem steps of building a version that cost a file or two syscalls each — and the chunk index's
// reads of the chunks it serves (`read`) — done synchronously in an FsBatch worker: through fs/promises each syscall is a thread-pool round trip and a promise (~40 µs of
// CPU each on this VM, five per small file), which made a first sync of 5,000 small files cost more CPU in
// dispatching than in the kernel. Same rules as fs-safe.ts: nothing is written through a symlink (O_NOFOLLOW,
// O_EXCL, lstat before anything else), and every path was validated and joined by the caller. Paths may hold
// escaped bytes (names that are not UTF-8): each goes to node:fs through fsPath.

/** What the manifest says a file is; a previous version's file is only reused when it still says so. */
export interface ExpectedFile { size: number, mode: number, mtimeMs: number }

export type FsOp =
  /** A directory we own and can write into (made writable again if it exists); anything else at the path is removed first. */
  | { type: 'dir', path: string }
  /**
   * Hardlinks `source` (a previous version's file) to `target` if the source still matches `expect`.
   * `replace`: something may already be at target (a resumed build): the same inode counts as linked,
   * anything else is removed first. Without it an existing target is an error (EEXIST).
   */
  | { type: 'link', source: string, target: string, expect: ExpectedFile, replace: boolean }
  /** A new file (O_EXCL) with these bytes at these offsets, then its final mode and mtime, then closed. */
  | { type: 'create', path: string, pieces: Array<{ offset: number, bytes: Uint8Array }>, mode: number, mtimeMs: number, mtimeNs?: number }
  /** lstat, or null when nothing is there. */
  | { type: 'lstat', path: string }
  /**
   * Takes a file of an operator's existing copy of the tree (a seed) into staging if it is a regular file of
   * the expected size: hardlinked, or copied when `copy` is set or the filesystem refuses the link. Its bytes
   * are verified by the caller afterwards, in staging (where nobody can swap it for something else).
   * `replace` as for 'link' (a resumed build: the same inode is kept, anything else removed first).
   */
  | { type: 'adopt', source: string, target: string, size: number, copy: boolean, replace: boolean }
  /** A file's final mode and mtime, set through a descriptor opened without following a symlink. */
  | { type: 'finish', path: string, mode: number, mtimeMs: number, mtimeNs?: number }
  /**
   * The bytes of a chunk at `offset` of the regular file at `path` (not through a symlink), checked against
   * `id` (SHA-256) here, off the caller's thread. Serving a chunk this way costs an open, a pread and a close
   * per batch and file, against four thread-pool round trips and promises through fs/promises.
   * `stamp`: the file's recorded stamp (file-stamp.ts); when the file's stamp after the read still vouches
   * for `id`, the bytes are not hashed again.
   */
  | { type: 'read', path: string, offset: number, size: number, id: Uint8Array, stamp?: Uint8Array }

/** 'changed': the source no longer looks like its manifest entry; 'refused': the filesystem will not link it. */
export type LinkOutcome = 'linked' | 'changed' | 'refused'
/** 'other-size': a regular file of another size (not taken); 'absent': no regular file at the source. */
export type AdoptOutcome = 'linked' | 'copied' | 'other-size' | 'absent'

export interface StatSummary {
  kind: 'file' | 'dir' | 'symlink' | 'other'
  size: number
  /** Permission bits only (& 0o7777). */
  mode: number
  mtimeMs: number
  nlink: number
  ino: number
  dev: number
}

/**
 * 'short': the file ends before the chunk does; 'mismatch': the bytes there hash to another id.
 * 'ok': `hashed` false when the recorded stamp vouched for the bytes; `stamp`: the file's stamp after a read
 * that hashed and matched, when it is settled (old enough to be recorded).
 */
export type ReadOutcome = { kind: 'ok', bytes: Uint8Array, hashed: boolean, stamp?: Uint8Array } | { kind: 'short', bytesRead: number } | { kind: 'mismatch' }

export interface FsOutcomes { dir: null, link: LinkOutcome, create: null, lstat: StatSummary | null, adopt: AdoptOutcome, finish: null, read: ReadOutcome }

export type FsOpResult = { ok: true, value: FsOutcomes[FsOp['type']] } | { ok: false, error: SerializedError }

const LINK_REFUSALS = new Set(['EXDEV', 'EPERM', 'EMLINK'])

export function summarize (st: Stats): StatSummary {
  const kind = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other'
  return { kind, size: st.size, mode: st.mode & 0o7777, mtimeMs: st.mtimeMs, nlink: st.nlink, ino: st.ino, dev: st.dev }
}

export function matches (st: StatSummary | undefined, expect: ExpectedFile): boolean {
  return st?.kind === 'file' && st.size === expect.size && st.mode === expect.mode && sameMillisecond(st.mtimeMs, expect.mtimeMs)
}

function lstatOrNull (path: string): StatSummary | null {
  const st = lstatSync(fsPath(path), { throwIfNoEntry: false })
  return st === undefined ? null : summarize(st)
}

function ensureDirSync (path: string): void {
  const st = lstatOrNull(path)
  if (st?.kind === 'dir') {
    if ((st.mode & STAGING_DIR_MODE) !== STAGING_DIR_MODE) {
      const fd = openSync(fsPath(path), DIR_FLAGS)
      try { fchmodSync(fd, st.mode | STAGING_DIR_MODE) } finally { closeSync(fd) }
    }
    return
  }
  if (st !== null) rmSync(fsPath(path), { recursive: true, force: true })
  mkdirSync(fsPath(path), { mode: STAGING_DIR_MODE })
}

/**
 * A resumed build's target: kept when it already is `source`'s inode (a hardlink made before the crash),
 * otherwise removed (whatever it is) so the step can make it again.
 */
function clearTarget (target: string, source: StatSummary | undefined): 'same' | 'cleared' {
  const existing = lstatOrNull(target)
  if (existing === null) return 'cleared'
  if (source !== undefined && existing.kind === 'file' && existing.ino === source.ino && existing.dev === source.dev) return 'same'
  rmSync(fsPath(target), { recursive: true, force: true })
  return 'cleared'
}

function linkSyncChecked (op: Extract<FsOp, { type: 'link' }>): LinkOutcome {
  const source = lstatOrNull(op.source)
  if (source === null || !matches(source, op.expect)) return 'changed'
  if (op.replace && clearTarget(op.target, source) === 'same') return 'linked'
  try {
    linkSync(fsPath(op.source), fsPath(op.target))
    return 'linked'
  } catch (err) {
    if (LINK_REFUSALS.has(errnoOf(err) ?? '')) return 'refused'
    throw err
  }
}

function createSync (op: Extract<FsOp, { type: 'create' }>): void {
  const fd = openSync(fsPath(op.path), CREATE_FLAGS, STAGING_FILE_MODE)
  try {
    for (const { offset, bytes } of op.pieces) {
      let done = 0
      while (done < bytes.byteLength) done += writeSync(fd, bytes, done, bytes.byteLength - done, offset + done)
    }
    fchmodSync(fd, op.mode)
    setFdTimes(fd, op.mtimeMs, op.mtimeNs)
  } finally {
    closeSync(fd)
  }
}

function adoptSync (op: Extract<FsOp, { type: 'adopt' }>): AdoptOutcome {
  const source = lstatOrNull(op.source)
  if (source?.kind !== 'file') return 'absent'
  if (source.size !== op.size) return 'other-size'
  if (op.replace && clearTarget(op.target, op.copy ? undefined : source) === 'same') return 'linked'
  if (!op.copy) {
    try {
      linkSync(fsPath(op.source), fsPath(op.target))
      return 'linked'
    } catch (err) {
      if (!LINK_REFUSALS.has(errnoOf(err) ?? '')) throw err
    }
  }
  // a reflink where the filesystem has them, a plain copy elsewhere; COPYFILE_EXCL: never over anything there
  copyFileSync(fsPath(op.source), fsPath(op.target), constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE)
  return 'copied'
}

function finishSync (op: Extract<FsOp, { type: 'finish' }>): void {
  const fd = openSync(fsPath(op.path), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
  try {
    fchmodSync(fd, op.mode)
    setFdTimes(fd, op.mtimeMs, op.mtimeNs)
  } finally {
    closeSync(fd)
  }
}

/**
 * Descriptors opened for the read steps of one batch, each file once (a server reads several chunks of a
 * file in a row), all closed when the batch is done: a file replaced or deleted between batches is looked
 * up afresh, and nothing keeps a deleted file's space.
 */
export class ReadFiles {
  private readonly fds = new Map<string, number>()

  fd (path: string): number {
    let fd = this.fds.get(path)
    if (fd === undefined) {
      fd = openSync(fsPath(path), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
      this.fds.set(path, fd)
    }
    return fd
  }

  /** A failed read: the next step on this path opens it again. */
  drop (path: string): void {
    const fd = this.fds.get(path)
    if (fd === undefined) return
    this.fds.delete(path)
    try { closeSync(fd) } catch { /* already unusable */ }
  }

  closeAll (): void {
    for (const path of [...this.fds.keys()]) this.drop(path)
  }
}

/** SHA-256s done by read steps in this thread (tests run steps in their own thread). */
export const readHashes = { count: 0 }

function readSyncChecked (op: Extract<FsOp, { type: 'read' }>, files: ReadFiles): ReadOutcome {
  try {
    const fd = files.fd(op.path)
    // its own ArrayBuffer (not the pool's), so that it can be transferred to the caller's thread
    const bytes = Buffer.allocUnsafeSlow(op.size)
    let filled = 0
    while (filled < op.size) {
      const n = readSync(fd, bytes, filled, op.size - filled, op.offset + filled)
      if (n === 0) break
      filled += n
    }
    if (filled < op.size) { files.drop(op.path); return { kind: 'short', bytesRead: filled } }
    // after the read: a write that changed these bytes set ctime before copying them (and a recorded stamp
    // is settled, so that ctime cannot be the recorded one); bigint for the nanoseconds
    const stamp = stampOf(fstatSync(fd, { bigint: true }))
    if (vouches(op.stamp, stamp, op.id)) return { kind: 'ok', bytes, hashed: false }
    readHashes.count++
    if (!idsEqual(chunkIdOf(bytes), op.id)) { files.drop(op.path); return { kind: 'mismatch' } }
    return settled(stamp, Date.now()) ? { kind: 'ok', bytes, hashed: true, stamp } : { kind: 'ok', bytes, hashed: true }
  } catch (err) {
    files.drop(op.path)
    throw err
  }
}

/** Runs one step; its failure is its own result (the steps after it still run). `files`: the batch's read descriptors. */
export function runFsOp (op: FsOp, serialize: (err: unknown) => SerializedError, files: ReadFiles): FsOpResult {
  try {
    switch (op.type) {
      case 'dir': ensureDirSync(op.path); return { ok: true, value: null }
      case 'link': return { ok: true, value: linkSyncChecked(op) }
      case 'create': createSync(op); return { ok: true, value: null }
      case 'lstat': return { ok: true, value: lstatOrNull(op.path) }
      case 'adopt': return { ok: true, value: adoptSync(op) }
      case 'finish': finishSync(op); return { ok: true, value: null }
      case 'read': return { ok: true, value: readSyncChecked(op, files) }
    }
  } catch (err) {
    return { ok: false, error: serialize(err) }
  }
}

