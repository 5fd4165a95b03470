// `verify --repair`: damaged files of a held version rebuilt from the signed manifest, from chunks found on this
// disk (each re-hashed on read) or fetched from peers, then put in place the way a sync installs them: a new
// file renamed over the damaged name, so that a reader sees the damaged file or the whole good one, never a mix.
//
// Versions share unchanged files by hardlink. A damaged inode is therefore usually damaged under several names:
// this version's, the other held versions' (same path, unchanged between them), and other names of a hardlinked
// file inside one version. Every such name whose manifest entry says the same content (size, mode, mtime, chunks)
// is damaged too, and is relinked to the repaired inode, so the versions keep sharing it. A name of the old
// inode whose entry says otherwise (which the agent never links, but a hand-made link could) is left alone: the
// link to this version is broken by the rename, and that name keeps its inode (verify it on its own). The old
// inode is never written, so nothing outside the versions that shares it (a --seed directory) is touched.
import { chmod, link, lstat, rename, rm, symlink } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { basename, dirname, join } from 'node:path'
import { toHex, type ChunkId } from '../../protocol/chunk-id.js'
import { decodeRoot, isHoleChunk, type FileEntry, type SymlinkEntry } from '../../protocol/manifest.js'
import { openEnvelope } from '../../protocol/envelope.js'
import { fsPath } from '../../protocol/paths.js'
import type { Catalog, ChunkIndex, PlacedChunk, VersionRecord } from '../store/types.js'
import { readManifestEntries } from '../store/manifest-io.js'
import { createFile, safeJoin, writeAt } from '../fs/fs-safe.js'
import { msAndNanos, setFdTimes, setPathTimes } from '../fs/precise-times.js'
import { DeltameshError } from '../../protocol/errors.js'

/** Fetches chunks from peers; calls onChunk with each verified one; resolves when done or when no peer has the rest. */
export type RepairFetch = (wanted: Array<{ id: ChunkId, size: number }>, onChunk: (id: ChunkId, bytes: Uint8Array) => Promise<void>, signal?: AbortSignal) => Promise<void>

export interface RepairComponents {
  catalog: Catalog
  index: Pick<ChunkIndex, 'readChunk' | 'indexFile' | 'getRoot'>
  /** Chunks no local file holds any more (a running agent asks its peers); absent: local copies only. */
  fetch?: RepairFetch
}

export interface RepairReport {
  /** Repaired names of this version, each with the other held versions relinked to the repaired file. */
  repaired: Array<{ path: string, fetchedChunks: number, alsoIn: number[] }>
  unrepaired: Array<{ path: string, reason: string }>
}

/** A version that is not a materialized copy (this site's own publish: its files are the source). */
export class RepairRefusedError extends DeltameshError {
  static override name = 'RepairRefusedError'
  constructor (message: string) {
    super(message)
    this.name = 'RepairRefusedError'
  }
}

interface HeldVersion { record: VersionRecord, dir: string, rootId: number, entries: Map<string, FileEntry | SymlinkEntry> }

export async function repairVersion (c: RepairComponents, tree: string, seq: number, damaged: Array<FileEntry | SymlinkEntry>, signal?: AbortSignal): Promise<RepairReport> {
  const report: RepairReport = { repaired: [], unrepaired: [] }
  if (damaged.length === 0) return report
  const held = await heldVersions(c, tree, new Set(damaged.map(e => e.path)), signal)
  const self = held.find(v => v.record.seq === seq)
  if (self === undefined) {
    const record = await c.catalog.getVersion(tree, seq)
    throw new RepairRefusedError(`${tree}@${seq} is not a copy materialized here${record?.path === undefined ? '' : ` (its files are ${record.path}, this site's own publish)`}: repair its files by hand, then publish again`)
  }
  const done = new Set<string>()
  for (const entry of damaged) {
    signal?.throwIfAborted()
    if (done.has(entry.path)) continue
    try {
      if (entry.type === 'symlink') {
        await replaceSymlink(self.dir, entry)
        report.repaired.push({ path: entry.path, fetchedChunks: 0, alsoIn: [] })
      } else {
        const r = await repairFile(c, held, self, entry, signal)
        for (const p of r.samePaths) done.add(p)
        report.repaired.push({ path: entry.path, fetchedChunks: r.fetched, alsoIn: r.alsoIn })
      }
    } catch (err) {
      if (signal?.aborted === true) throw err
      report.unrepaired.push({ path: entry.path, reason: (err as Error).message })
    }
    done.add(entry.path)
  }
  return report
}

/** The complete, materialized versions of the tree, with their manifest entries at the damaged paths. */
async function heldVersions (c: RepairComponents, tree: string, paths: Set<string>, signal?: AbortSignal): Promise<HeldVersion[]> {
  const out: HeldVersion[] = []
  for (const record of await c.catalog.listVersions(tree)) {
    if (record.state !== 'complete' || record.path === undefined || record.rootId === undefined) continue
    if ((await c.index.getRoot(record.rootId))?.kind !== 'version') continue
    const rootBytes = await c.catalog.getBlob(openEnvelope(record.envelope).rootHash)
    if (rootBytes === undefined) continue
    const entries = new Map<string, FileEntry | SymlinkEntry>()
    for await (const e of readManifestEntries(c.catalog, decodeRoot(rootBytes), signal)) if (e.type !== 'dir' && paths.has(e.path)) entries.set(e.path, e)
    out.push({ record, dir: record.path, rootId: record.rootId, entries })
  }
  return out
}

/** Same bytes, mode and times: names the agent would have linked to one inode. */
function sameContent (a: FileEntry, b: FileEntry | SymlinkEntry | undefined): boolean {
  return b?.type === 'file' && a.size === b.size && a.mode === b.mode && a.mtimeMs === b.mtimeMs && (a.mtimeNs ?? 0) === (b.mtimeNs ?? 0) &&
    a.chunks.length === b.chunks.length && a.chunks.every((ch, i) => toHex(ch.id) === toHex((b.chunks[i] as typeof ch).id))
}

async function inodeOf (path: string): Promise<string | undefined> {
  const st = await lstat(fsPath(path)).catch(() => undefined)
  return st?.isFile() === true ? `${st.dev}:${st.ino}` : undefined
}

/**
 * Builds the file anew next to the damaged one, relinks every name of the old inode that expects the same
 * content (this version's other damaged names, the other held versions'), then renames it over the damaged name.
 */
async function repairFile (c: RepairComponents, held: HeldVersion[], self: HeldVersion, entry: FileEntry, signal?: AbortSignal): Promise<{ fetched: number, alsoIn: number[], samePaths: string[] }> {
  const target = safeJoin(self.dir, entry.path)
  const oldInode = await inodeOf(target)
  const temp = join(dirname(target), `.${basename(target)}.repair-${process.pid}-${randomBytes(4).toString('hex')}`)
  const fetched = await withWritableDir(dirname(target), async () => await buildFile(c, entry, temp, signal))
  const alsoIn: number[] = []
  const samePaths: string[] = []
  try {
    for (const v of held) {
      for (const [path, other] of v.entries) {
        if ((v === self && path === entry.path) || !sameContent(entry, other)) continue
        const name = safeJoin(v.dir, path)
        if (oldInode === undefined || await inodeOf(name) !== oldInode) continue
        await withWritableDir(dirname(name), async () => { await replaceWithLink(temp, name) })
        await c.index.indexFile(v.rootId, path, placed(entry))
        if (v === self) samePaths.push(path)
        else if (!alsoIn.includes(v.record.seq)) alsoIn.push(v.record.seq)
      }
    }
    await withWritableDir(dirname(target), async () => { await rename(fsPath(temp), fsPath(target)) })
  } catch (err) {
    await rm(fsPath(temp), { force: true }).catch(() => {})
    throw err
  }
  await c.index.indexFile(self.rootId, entry.path, placed(entry))
  return { fetched, alsoIn, samePaths }
}

/** The file's chunks at their offsets, holes left out (the index records none). */
function placed (entry: FileEntry): PlacedChunk[] {
  const out: PlacedChunk[] = []
  let offset = 0
  for (const ch of entry.chunks) {
    if (!isHoleChunk(ch.id)) out.push({ id: ch.id, offset, size: ch.size })
    offset += ch.size
  }
  return out
}

/** Writes the manifest's file at `temp` from local chunks, then peers; its mode and times; fsynced. Returns the chunks fetched. */
async function buildFile (c: RepairComponents, entry: FileEntry, temp: string, signal?: AbortSignal): Promise<number> {
  const handle = await createFile(temp)
  let ok = false
  try {
    await handle.truncate(entry.size)
    const missing = new Map<string, { id: ChunkId, size: number, offsets: number[] }>()
    for (const ch of placed(entry)) {
      signal?.throwIfAborted()
      const bytes = await c.index.readChunk(ch.id, signal)
      if (bytes !== undefined) { await writeAt(handle, bytes, ch.offset); continue }
      const hex = toHex(ch.id)
      const m = missing.get(hex) ?? { id: ch.id, size: ch.size, offsets: [] }
      m.offsets.push(ch.offset)
      missing.set(hex, m)
    }
    const wanted = missing.size
    if (wanted > 0 && c.fetch !== undefined) {
      await c.fetch([...missing.values()].map(m => ({ id: m.id, size: m.size })), async (id, bytes) => {
        const m = missing.get(toHex(id))
        if (m === undefined) return
        for (const offset of m.offsets) await writeAt(handle, bytes, offset)
        missing.delete(toHex(id))
      }, signal)
    }
    if (missing.size > 0) {
      throw new Error(`${missing.size} chunk${missing.size === 1 ? '' : 's'} of it ${c.fetch === undefined ? 'are on no local file (start the agent: verify --repair through it asks its peers)' : 'are on no local file and no connected peer has them'}`)
    }
    await handle.chmod(entry.mode)
    setFdTimes(handle.fd, entry.mtimeMs, entry.mtimeNs)
    await handle.sync()
    ok = true
    return wanted
  } finally {
    await handle.close()
    if (!ok) await rm(fsPath(temp), { force: true }).catch(() => {})
  }
}

/** Puts a hardlink of `source` at `name` atomically (a temporary link renamed over it). */
async function replaceWithLink (source: string, name: string): Promise<void> {
  const tmp = join(dirname(name), `.${basename(name)}.relink-${process.pid}-${randomBytes(4).toString('hex')}`)
  await link(fsPath(source), fsPath(tmp))
  try {
    await rename(fsPath(tmp), fsPath(name))
  } catch (err) {
    await rm(fsPath(tmp), { force: true }).catch(() => {})
    throw err
  }
}

async function replaceSymlink (dir: string, entry: SymlinkEntry): Promise<void> {
  const target = safeJoin(dir, entry.path)
  const tmp = join(dirname(target), `.${basename(target)}.repair-${process.pid}-${randomBytes(4).toString('hex')}`)
  await withWritableDir(dirname(target), async () => {
    await symlink(fsPath(entry.target), fsPath(tmp))
    setPathTimes(tmp, entry.mtimeMs, entry.mtimeNs, { noFollow: true })
    await rename(fsPath(tmp), fsPath(target))
  })
}

/**
 * Runs fn in a directory made writable for it if its manifest mode is read-only, then gives the directory its
 * mode and times back (a rename inside it moves its mtime, which the manifest records).
 */
async function withWritableDir<T> (dir: string, fn: () => Promise<T>): Promise<T> {
  const st = await lstat(fsPath(dir), { bigint: true })
  const mode = Number(st.mode) & 0o7777
  if ((mode & 0o300) !== 0o300) await chmod(fsPath(dir), mode | 0o700)
  try {
    return await fn()
  } finally {
    if ((mode & 0o300) !== 0o300) await chmod(fsPath(dir), mode)
    const { mtimeMs, mtimeNs } = msAndNanos(st.mtimeNs)
    setPathTimes(dir, mtimeMs, mtimeNs, { noFollow: false })
  }
}
