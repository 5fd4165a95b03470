import { constants } from 'node:fs'
import { lstat, open, readdir, rename, rm, symlink, unlink, type FileHandle } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { basename, dirname, join } from 'node:path'
import type { Stats } from 'node:fs'
import { fsPath, nameFromFs, validateRelativePath } from '../../protocol/paths.js'

// Filesystem steps of building a version, each written so that nothing is ever written through a
// symlink: files are created with O_CREAT|O_EXCL|O_NOFOLLOW, reopened with O_NOFOLLOW, directories are
// checked with lstat, and every relative path is validated before it is joined under the staging dir.

/** Staging files are private until finalize sets the manifest's modes. */
export const STAGING_FILE_MODE = 0o600
export const STAGING_DIR_MODE = 0o700

export const CREATE_FLAGS = constants.O_CREAT | constants.O_EXCL | constants.O_RDWR | constants.O_NOFOLLOW
const REOPEN_FLAGS = constants.O_RDWR | constants.O_NOFOLLOW | constants.O_NONBLOCK
const READ_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW
export const DIR_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_DIRECTORY

/**
 * Manifests hold whole milliseconds (floored). utimes() takes seconds as a double, whose rounding at today's
 * epoch (about 240 ns) can land just below the millisecond and read back one less; aiming 0.1 ms past the
 * millisecond keeps the floored value exact.
 */
const MTIME_NUDGE_MS = 0.1
export function timeOf (mtimeMs: number): number { return (mtimeMs + MTIME_NUDGE_MS) / 1000 }

/** Joins a manifest path under `base` after validating it (throws InvalidPathError on '..', absolute, …). */
export function safeJoin (base: string, relPath: string): string {
  return join(base, validateRelativePath(relPath))
}

export async function lstatOrUndefined (path: string): Promise<Stats | undefined> {
  try {
    return await lstat(fsPath(path))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}

export function errnoOf (err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code
}

/** A fresh regular file (never follows or reuses anything already there; the caller removed it first). */
export async function createFile (path: string): Promise<FileHandle> {
  return await open(fsPath(path), CREATE_FLAGS, STAGING_FILE_MODE)
}

/**
 * Opens an existing staging file for writing, refusing a symlink in its place. A file with more than one
 * link shares its inode with another version (a hardlink) and must never be written: the caller gets
 * undefined and replaces it. Open first, then check the open file (open + fstat: a sync reopens a staging
 * file for every chunk it receives); O_NONBLOCK so that a FIFO planted in the path cannot hang the open.
 */
export async function reopenPrivateFile (path: string): Promise<FileHandle | undefined> {
  let handle: FileHandle
  try {
    handle = await open(fsPath(path), REOPEN_FLAGS)
  } catch (err) {
    const code = errnoOf(err)
    if (code === 'ENOENT' || code === 'ELOOP' || code === 'EISDIR' || code === 'ENXIO') return undefined
    if (code !== 'EACCES') throw err
    // a finalize that was interrupted may already have set a read-only mode
    const st = await lstatOrUndefined(path)
    if (st === undefined || !st.isFile() || st.nlink !== 1) return undefined
    const ro = await open(fsPath(path), READ_FLAGS)
    try { await ro.chmod(STAGING_FILE_MODE) } finally { await ro.close() }
    handle = await open(fsPath(path), REOPEN_FLAGS)
  }
  const st = await handle.stat()
  if (!st.isFile() || st.nlink !== 1) { await handle.close(); return undefined }
  if ((st.mode & STAGING_FILE_MODE) !== STAGING_FILE_MODE) await handle.chmod(STAGING_FILE_MODE)
  return handle
}

export async function openForRead (path: string): Promise<FileHandle> {
  return await open(fsPath(path), READ_FLAGS)
}

export async function openDir (path: string): Promise<FileHandle> {
  return await open(fsPath(path), DIR_FLAGS)
}

/** Removes whatever is at `path` (file, link or directory tree). */
export async function removeAny (path: string): Promise<void> {
  await rm(fsPath(path), { recursive: true, force: true })
}

/** Reads exactly `size` bytes at `offset`, or fewer when the file is shorter. */
export async function readAt (handle: FileHandle, offset: number, size: number): Promise<Buffer> {
  const buffer = Buffer.allocUnsafe(size)
  let done = 0
  while (done < size) {
    const { bytesRead } = await handle.read(buffer, done, size - done, offset + done)
    if (bytesRead === 0) break
    done += bytesRead
  }
  return buffer.subarray(0, done)
}

export async function writeAt (handle: FileHandle, bytes: Uint8Array, offset: number): Promise<void> {
  let done = 0
  while (done < bytes.byteLength) {
    const { bytesWritten } = await handle.write(bytes, done, bytes.byteLength - done, offset + done)
    done += bytesWritten
  }
}

/** Writes `buffers` back to back from `offset`: one writev for a run of chunks (a short write is finished by writeAt). */
export async function writevAt (handle: FileHandle, buffers: Uint8Array[], offset: number): Promise<void> {
  let total = 0
  for (const b of buffers) total += b.byteLength
  const { bytesWritten } = await handle.writev(buffers, offset)
  if (bytesWritten === total) return
  let skip = bytesWritten
  let at = offset
  for (const b of buffers) {
    if (skip < b.byteLength) await writeAt(handle, b.subarray(skip), at + skip)
    skip = Math.max(0, skip - b.byteLength)
    at += b.byteLength
  }
}

export async function fsyncDir (path: string): Promise<void> {
  const handle = await openDir(path)
  try { await handle.sync() } finally { await handle.close() }
}

/**
 * Points the symlink `linkPath` at `target` atomically: a temporary link is created next to it and
 * renamed over it, so a reader sees the old target or the new one, never no link. The link's parent
 * directory must exist.
 */
export async function flipSymlink (linkPath: string, target: string): Promise<void> {
  const tmp = join(dirname(linkPath), `.${basename(linkPath)}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`)
  await symlink(target, tmp)
  try {
    await rename(tmp, linkPath)
  } catch (err) {
    await unlink(tmp).catch(() => {})
    throw err
  }
  await fsyncDir(dirname(linkPath))
}

/**
 * rm -rf that also works on a finalized version whose directories are read-only (mode 0555): on EACCES
 * it makes every directory under `path` writable by us (lstat only, never following a link) and retries.
 * Files are only unlinked, so hardlinks shared with other versions are untouched.
 */
export async function removeTree (path: string): Promise<void> {
  try {
    await rm(fsPath(path), { recursive: true, force: true })
    return
  } catch (err) {
    if (errnoOf(err) !== 'EACCES' && errnoOf(err) !== 'EPERM') throw err
  }
  await makeDirsWritable(path)
  await rm(fsPath(path), { recursive: true, force: true })
}

async function makeDirsWritable (path: string): Promise<void> {
  const st = await lstatOrUndefined(path)
  if (st?.isDirectory() !== true) return
  if ((st.mode & STAGING_DIR_MODE) !== STAGING_DIR_MODE) {
    const handle = await openDir(path)
    try { await handle.chmod((st.mode & 0o7777) | STAGING_DIR_MODE) } finally { await handle.close() }
  }
  for (const name of await readdir(fsPath(path), { encoding: 'buffer' })) await makeDirsWritable(join(path, nameFromFs(name)))
}
