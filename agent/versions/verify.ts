import { open, lstat, readlink } from 'node:fs/promises'
import { join } from 'node:path'
import { chunkIdOf, idsEqual } from '../../protocol/chunk-id.js'
import { openEnvelope } from '../../protocol/envelope.js'
import { decodeRoot, isHoleChunk, type FileEntry, type ManifestEntry, type SymlinkEntry } from '../../protocol/manifest.js'
import { isAllZero } from '../chunk/zeros.js'
import type { Catalog } from '../store/types.js'
import { readManifestEntries } from '../store/manifest-io.js'
import { globFilter } from './walk.js'
import { bytesToPath, fsPath } from '../../protocol/paths.js'
import { msAndNanos, preciseTimesAvailable } from '../fs/precise-times.js'

export interface VerifyProblem { path: string, reason: string }
export interface VerifyResult {
  tree: string
  seq: number
  path: string
  files: number
  bytes: number
  problems: VerifyProblem[]
}

const MAX_REPORTED_PROBLEMS = 1000

/**
 * Re-reads every file of a held version and re-hashes it chunk by chunk against the signed manifest;
 * also checks directories, symlink targets, sizes and modes. Reads one chunk at a time (bounded memory).
 */
export async function verifyVersion (catalog: Catalog, tree: string, seq: number | undefined, signal?: AbortSignal, onDamaged?: (entry: FileEntry | SymlinkEntry) => void): Promise<VerifyResult> {
  const record = await catalog.getTree(tree)
  const chosen = seq ?? record?.currentSeq
  if (chosen === undefined) throw new Error(`No version of ${tree} is held here`)
  const version = await catalog.getVersion(tree, chosen)
  if (version === undefined || version.path === undefined) throw new Error(`Version ${tree}@${chosen} is not held here`)
  if (version.state !== 'complete') throw new Error(`Version ${tree}@${chosen} is not complete (state: ${version.state})`)
  const envelope = openEnvelope(version.envelope)
  const rootBytes = await catalog.getBlob(envelope.rootHash)
  if (rootBytes === undefined) throw new Error(`Root of ${tree}@${chosen} is missing from the catalog`)
  const result: VerifyResult = { tree, seq: chosen, path: version.path, files: 0, bytes: 0, problems: [] }
  let last: ManifestEntry | undefined
  const problem = (path: string, reason: string): void => {
    if (result.problems.length < MAX_REPORTED_PROBLEMS) result.problems.push({ path, reason })
    // each damaged file or symlink once, for a repair (verify --repair)
    if (last !== undefined && last.type !== 'dir' && last.path === path) { onDamaged?.(last); last = undefined }
  }

  // a subscription with --include/--exclude holds only part of the version: check that part (the patterns its
  // directory was built with; a changed subscription is being applied by a rebuild)
  const selection = version.selection ?? record
  const filter = version.rootId !== undefined ? globFilter(selection?.include, selection?.exclude) : undefined
  for await (const entry of readManifestEntries(catalog, decodeRoot(rootBytes), signal)) {
    signal?.throwIfAborted()
    if (filter !== undefined && entry.type !== 'dir' && !filter(entry.path, entry.type)) continue
    last = entry
    const absolute = join(version.path, entry.path)
    let st
    try {
      st = await lstat(fsPath(absolute), { bigint: true })
    } catch {
      // directories are materialized only where something selected lies under them
      if (!(filter !== undefined && entry.type === 'dir')) problem(entry.path, 'missing')
      continue
    }
    if (entry.type === 'dir') {
      if (!st.isDirectory()) problem(entry.path, 'not a directory')
    } else if (entry.type === 'symlink') {
      if (!st.isSymbolicLink()) problem(entry.path, 'not a symlink')
      else if (bytesToPath(await readlink(fsPath(absolute), { encoding: 'buffer' })) !== entry.target) problem(entry.path, 'symlink target differs')
    } else {
      result.files++
      if (!st.isFile()) { problem(entry.path, 'not a regular file'); continue }
      if (Number(st.size) !== entry.size) { problem(entry.path, `size ${st.size}, manifest says ${entry.size}`); continue }
      if ((Number(st.mode) & 0o7777) !== entry.mode) problem(entry.path, `mode ${(Number(st.mode) & 0o7777).toString(8)}, manifest says ${entry.mode.toString(8)}`)
      const mtime = timeDifference(st.mtimeNs, entry)
      if (mtime !== undefined) problem(entry.path, mtime)
      const handle = await open(fsPath(absolute), 'r')
      try {
        let offset = 0
        for (const chunk of entry.chunks) {
          const buffer = Buffer.allocUnsafe(chunk.size)
          const { bytesRead } = await handle.read(buffer, 0, chunk.size, offset)
          // a hole is zeros of its size: whether the range is unallocated on disk says nothing about content
          const same = bytesRead === chunk.size && (isHoleChunk(chunk.id) ? isAllZero(buffer) : idsEqual(chunkIdOf(buffer), chunk.id))
          // a chunk is checked as a whole (its SHA-256): the difference is somewhere in its byte range
          if (!same) { problem(entry.path, `content differs in bytes ${offset}–${offset + chunk.size - 1} (chunk ${entry.chunks.indexOf(chunk) + 1} of ${entry.chunks.length})`); break }
          offset += chunk.size
          result.bytes += chunk.size
        }
      } finally {
        await handle.close()
      }
    }
  }
  return result
}

/** A file's mtime against the manifest's (to the nanosecond), as a problem, or undefined when they agree. */
function timeDifference (mtimeNs: bigint, entry: { mtimeMs: number, mtimeNs?: number }): string | undefined {
  const expected = BigInt(entry.mtimeMs) * 1_000_000n + BigInt(entry.mtimeNs ?? 0)
  if (mtimeNs === expected) return undefined
  // without the native helper times are set to about a microsecond past the exact millisecond (fs/precise-times.ts)
  if (!preciseTimesAvailable().ok && msAndNanos(mtimeNs).mtimeMs === entry.mtimeMs) return undefined
  const show = (ns: bigint): string => `${new Date(Number(ns / 1_000_000n)).toISOString().replace('Z', '')}${String(((ns % 1_000_000n) + 1_000_000n) % 1_000_000n).padStart(6, '0')}Z`
  return `mtime ${show(mtimeNs)}, manifest says ${show(expected)}`
}
