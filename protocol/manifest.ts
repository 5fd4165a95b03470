import { InvalidMessageError, LimitExceededError } from './errors.js'
import { CHUNK_ID_BYTES, MAX_CHUNK_SIZE, MAX_CHUNKS_PER_FILE, MAX_ENTRY_BYTES, MAX_FILE_SIZE, MAX_MANIFEST_ENTRIES, MAX_PATH_BYTES, MAX_ROOT_BYTES, MAX_SYMLINK_TARGET_BYTES } from './limits.js'
import { type ChunkId } from './chunk-id.js'
import { bytesToPath, comparePaths, parentOf, pathToBytes, validateRelativePath } from './paths.js'
import { decodeUntrusted, decodeUvarint, encodeCanonical, encodeUvarint, expectBytes, expectInt, expectString, expectTuple } from './codec.js'
import { createHash } from 'node:crypto'

// A manifest is a stream of records, each a uvarint length followed by one canonical msgpack value:
// first a header (format, chunking parameters), then one record per entry in canonical path order.
// Framing each record lets a reader decode a manifest of millions of entries as its chunks arrive,
// with memory bounded by one record, and lets the writer emit entries as the scanner finds them.
//
// Format 2 (written since issue 23; format 1 still decodes) carries what a Linux tree holds and rsync -aHS
// keeps: names and symlink targets as raw bytes (any byte but '/' and NUL; see paths.ts for their in-memory
// form), mtimes to the nanosecond, hardlinks inside the version, and holes of sparse files.

export type ChunkingAlgorithm = 'rabin' | 'gear'

/** How files were cut; recorded so a subscriber can tell how a version was made and a publisher can rechunk alike. */
export interface ChunkingParams {
  algorithm: ChunkingAlgorithm
  /** log2 of the target size beyond the minimum (rabin-wasm's first argument; the gear mask bits). */
  avgBits: number
  minSize: number
  maxSize: number
}

export interface ChunkRef {
  id: ChunkId
  size: number
}

/**
 * Times are whole milliseconds (`mtimeMs`, floored) plus the nanoseconds past them (`mtimeNs`, 0..999,999;
 * absent means 0 and is what format 1 manifests decode to), so the common code keeps integer milliseconds.
 */
export interface DirEntry { type: 'dir', path: string, mode: number, mtimeMs: number, mtimeNs?: number }
export interface FileEntry {
  type: 'file'
  path: string
  mode: number
  mtimeMs: number
  mtimeNs?: number
  size: number
  /** In file order; a chunk whose id is HOLE_CHUNK_ID is a hole of `size` zero bytes (never fetched, never written). */
  chunks: ChunkRef[]
  /** The file had more than one link at the publisher: later entries of this manifest may name it as `linkTo`. */
  linkable?: boolean
  /**
   * A hardlink: the same inode as this earlier, `linkable` file entry of the manifest. Its content, mode and
   * times are repeated here and checked equal, so a reader that ignores links (a filtered subscription whose
   * filter leaves the other name out, verify) still has a whole file entry.
   */
  linkTo?: string
}
export interface SymlinkEntry { type: 'symlink', path: string, mtimeMs: number, mtimeNs?: number, target: string }
export type ManifestEntry = DirEntry | FileEntry | SymlinkEntry

export interface ManifestHeader {
  chunking: ChunkingParams
  /** The tree's top directory's own mode and times (format 2; rsync -a keeps them for the destination too). */
  root?: { mode: number, mtimeMs: number, mtimeNs?: number }
}

const MANIFEST_TAG = 'deltamesh/manifest'
const ROOT_TAG = 'deltamesh/root'
/** The manifest format written; FORMAT_V1 is still read. */
const FORMAT_VERSION = 2
const FORMAT_V1 = 1
/** The root's own format did not change with the manifest's. */
const ROOT_FORMAT_VERSION = 1
const ENTRY_DIR = 0
const ENTRY_FILE = 1
const ENTRY_SYMLINK = 2
const MAX_MTIME_MS = 2 ** 52
const MAX_NS_IN_MS = 999_999

/**
 * The id of a hole: a run of zero bytes of a sparse file, recorded instead of the zeros' chunk. No SHA-256
 * is all zeros (finding one is a preimage attack), so it never names real data. Nobody fetches, serves,
 * stores or indexes it; a materializer leaves the range unwritten in a file sized with ftruncate.
 */
export const HOLE_CHUNK_ID: ChunkId = new Uint8Array(CHUNK_ID_BYTES)

export function isHoleChunk (id: Uint8Array): boolean {
  if (id.length !== CHUNK_ID_BYTES || id[0] !== 0 || id[31] !== 0) return false
  for (let i = 1; i < CHUNK_ID_BYTES - 1; i++) if (id[i] !== 0) return false
  return true
}

export function validateChunkingParams (p: ChunkingParams): ChunkingParams {
  if (p.algorithm !== 'rabin' && p.algorithm !== 'gear') throw new InvalidMessageError(`Unknown chunking algorithm ${String(p.algorithm).slice(0, 20)}`)
  expectInt(p.avgBits, 'chunking avgBits', 8, 22)
  expectInt(p.minSize, 'chunking minSize', 64, MAX_CHUNK_SIZE)
  expectInt(p.maxSize, 'chunking maxSize', p.minSize, MAX_CHUNK_SIZE)
  return p
}

function frame (value: unknown[]): Uint8Array {
  const body = encodeCanonical(value)
  const prefix = encodeUvarint(body.byteLength)
  const out = new Uint8Array(prefix.byteLength + body.byteLength)
  out.set(prefix, 0)
  out.set(body, prefix.byteLength)
  return out
}

export function encodeHeader (header: ManifestHeader): Uint8Array {
  const c = validateChunkingParams(header.chunking)
  const r = header.root
  return frame([MANIFEST_TAG, FORMAT_VERSION, [c.algorithm, c.avgBits, c.minSize, c.maxSize], r === undefined ? [] : [r.mode, r.mtimeMs, r.mtimeNs ?? 0]])
}

const NO_LINK = new Uint8Array(0)

/** Format 2 records: names and link targets as bytes, the nanoseconds after the milliseconds. */
export function encodeEntry (entry: ManifestEntry): Uint8Array {
  const ns = entry.mtimeNs ?? 0
  switch (entry.type) {
    case 'dir':
      return frame([ENTRY_DIR, pathToBytes(entry.path), entry.mode, entry.mtimeMs, ns])
    case 'symlink':
      return frame([ENTRY_SYMLINK, pathToBytes(entry.path), entry.mtimeMs, ns, pathToBytes(entry.target)])
    case 'file': {
      const ids = new Uint8Array(entry.chunks.length * CHUNK_ID_BYTES)
      entry.chunks.forEach((c, i) => ids.set(c.id, i * CHUNK_ID_BYTES))
      const linkTo = entry.linkTo === undefined ? NO_LINK : pathToBytes(entry.linkTo)
      return frame([ENTRY_FILE, pathToBytes(entry.path), entry.mode, entry.mtimeMs, ns, entry.size, ids, entry.chunks.map(c => c.size), entry.linkable === true ? 1 : 0, linkTo])
    }
  }
}

interface DecodedHeader extends ManifestHeader { format: number }

function decodeHeaderValue (value: unknown): DecodedHeader {
  const format = Array.isArray(value) && value[1] === FORMAT_V1 ? FORMAT_V1 : FORMAT_VERSION
  const t = expectTuple(value, 'manifest header', MANIFEST_TAG, format, format === FORMAT_V1 ? 3 : 4)
  const c = t[2]
  if (!Array.isArray(c) || c.length !== 4) throw new InvalidMessageError('manifest header: bad chunking parameters')
  const header: DecodedHeader = { format, chunking: validateChunkingParams({ algorithm: c[0] as ChunkingAlgorithm, avgBits: c[1] as number, minSize: c[2] as number, maxSize: c[3] as number }) }
  if (format === FORMAT_V1) return header
  const r = t[3]
  if (!Array.isArray(r) || (r.length !== 0 && r.length !== 3)) throw new InvalidMessageError('manifest header: bad root times')
  if (r.length === 3) {
    header.root = withNs<{ mode: number, mtimeMs: number, mtimeNs?: number }>({ mode: expectInt(r[0], 'manifest root mode', 0, 0o7777), mtimeMs: expectInt(r[1], 'manifest root mtime', -MAX_MTIME_MS, MAX_MTIME_MS) }, r[2], 'manifest root')
  }
  return header
}

function decodeEntryValue (value: unknown, header: DecodedHeader): ManifestEntry {
  return header.format === FORMAT_V1 ? decodeEntryV1(value, header.chunking) : decodeEntryV2(value, header.chunking)
}

function pathFromBytes (value: unknown, what: string, maxBytes: number): string {
  const bytes = expectBytes(value, what, undefined, maxBytes)
  return bytesToPath(bytes)
}

function decodeChunks (at: string, size: number, idsValue: unknown, sizes: unknown, chunking: ChunkingParams): ChunkRef[] {
  const ids = expectBytes(idsValue, `${at} chunk ids`, undefined, MAX_CHUNKS_PER_FILE * CHUNK_ID_BYTES)
  if (!Array.isArray(sizes)) throw new InvalidMessageError(`${at}: chunk sizes not an array`)
  if (sizes.length > MAX_CHUNKS_PER_FILE) throw new LimitExceededError(`${at} chunk count`, sizes.length, MAX_CHUNKS_PER_FILE)
  if (ids.byteLength !== sizes.length * CHUNK_ID_BYTES) throw new InvalidMessageError(`${at}: ${sizes.length} chunk sizes but ${ids.byteLength} id bytes`)
  const chunks: ChunkRef[] = new Array(sizes.length)
  let total = 0
  for (let i = 0; i < sizes.length; i++) {
    const chunkSize = expectInt(sizes[i], `${at} chunk ${i} size`, 1, chunking.maxSize)
    total += chunkSize
    chunks[i] = { id: ids.subarray(i * CHUNK_ID_BYTES, (i + 1) * CHUNK_ID_BYTES), size: chunkSize }
  }
  if (total !== size) throw new InvalidMessageError(`${at}: chunks add up to ${total} bytes, size says ${size}`)
  return chunks
}

function decodeEntryV2 (value: unknown, chunking: ChunkingParams): ManifestEntry {
  if (!Array.isArray(value)) throw new InvalidMessageError('manifest entry: not an array')
  const kind = value[0]
  const path = validateRelativePath(pathFromBytes(value[1], 'manifest entry name', MAX_PATH_BYTES))
  const at = `manifest entry ${JSON.stringify(path.slice(0, 200))}`
  switch (kind) {
    case ENTRY_DIR:
      if (value.length !== 5) throw new InvalidMessageError(`${at}: dir has ${value.length} fields`)
      return withNs<DirEntry>({ type: 'dir', path, mode: expectInt(value[2], `${at} mode`, 0, 0o7777), mtimeMs: expectInt(value[3], `${at} mtime`, -MAX_MTIME_MS, MAX_MTIME_MS) }, value[4], at)
    case ENTRY_SYMLINK: {
      if (value.length !== 5) throw new InvalidMessageError(`${at}: symlink has ${value.length} fields`)
      const target = pathFromBytes(value[4], `${at} target`, MAX_SYMLINK_TARGET_BYTES)
      if (target === '' || target.includes('\0')) throw new InvalidMessageError(`${at}: empty symlink target or NUL in it`)
      return withNs<SymlinkEntry>({ type: 'symlink', path, mtimeMs: expectInt(value[2], `${at} mtime`, -MAX_MTIME_MS, MAX_MTIME_MS), target }, value[3], at)
    }
    case ENTRY_FILE: {
      if (value.length !== 10) throw new InvalidMessageError(`${at}: file has ${value.length} fields`)
      const mode = expectInt(value[2], `${at} mode`, 0, 0o7777)
      const mtimeMs = expectInt(value[3], `${at} mtime`, -MAX_MTIME_MS, MAX_MTIME_MS)
      const size = expectInt(value[5], `${at} size`, 0, MAX_FILE_SIZE)
      const chunks = decodeChunks(at, size, value[6], value[7], chunking)
      const linkable = expectInt(value[8], `${at} link flag`, 0, 1) === 1
      const linkBytes = expectBytes(value[9], `${at} link target`, undefined, MAX_SYMLINK_TARGET_BYTES)
      const entry = withNs<FileEntry>({ type: 'file', path, mode, mtimeMs, size, chunks }, value[4], at)
      if (linkable) entry.linkable = true
      if (linkBytes.byteLength > 0) entry.linkTo = validateRelativePath(bytesToPath(linkBytes))
      return entry
    }
    default:
      throw new InvalidMessageError(`${at}: unknown entry type ${String(kind).slice(0, 20)}`)
  }
}

function withNs<E extends { mtimeMs: number, mtimeNs?: number }> (entry: E, ns: unknown, at: string): E {
  const value = expectInt(ns, `${at} mtime nanoseconds`, 0, MAX_NS_IN_MS)
  if (value !== 0) entry.mtimeNs = value
  return entry
}

function decodeEntryV1 (value: unknown, chunking: ChunkingParams): ManifestEntry {
  if (!Array.isArray(value)) throw new InvalidMessageError('manifest entry: not an array')
  const kind = value[0]
  const path = validateRelativePath(value[1])
  const at = `manifest entry ${JSON.stringify(path.slice(0, 200))}`
  switch (kind) {
    case ENTRY_DIR:
      if (value.length !== 4) throw new InvalidMessageError(`${at}: dir has ${value.length} fields`)
      return { type: 'dir', path, mode: expectInt(value[2], `${at} mode`, 0, 0o7777), mtimeMs: expectInt(value[3], `${at} mtime`, -MAX_MTIME_MS, MAX_MTIME_MS) }
    case ENTRY_SYMLINK: {
      if (value.length !== 4) throw new InvalidMessageError(`${at}: symlink has ${value.length} fields`)
      const target = expectString(value[3], `${at} target`, MAX_SYMLINK_TARGET_BYTES)
      if (target === '' || target.includes('\0')) throw new InvalidMessageError(`${at}: empty symlink target or NUL in it`)
      return { type: 'symlink', path, mtimeMs: expectInt(value[2], `${at} mtime`, -MAX_MTIME_MS, MAX_MTIME_MS), target }
    }
    case ENTRY_FILE: {
      if (value.length !== 7) throw new InvalidMessageError(`${at}: file has ${value.length} fields`)
      const mode = expectInt(value[2], `${at} mode`, 0, 0o7777)
      const mtimeMs = expectInt(value[3], `${at} mtime`, -MAX_MTIME_MS, MAX_MTIME_MS)
      const size = expectInt(value[4], `${at} size`, 0, MAX_FILE_SIZE)
      const chunks = decodeChunks(at, size, value[5], value[6], chunking)
      // format 1 had no holes: a chunk of zero id bytes there is not one
      if (chunks.some(c => isHoleChunk(c.id))) throw new InvalidMessageError(`${at}: a chunk id of zeros in a format 1 manifest`)
      return { type: 'file', path, mode, mtimeMs, size, chunks }
    }
    default:
      throw new InvalidMessageError(`${at}: unknown entry type ${String(kind).slice(0, 20)}`)
  }
}

/**
 * Enforces the structure of a manifest: strictly increasing canonical order (so no duplicates), and every
 * entry's parent is a directory entry seen before it (so nothing sits under a file or a symlink, which is
 * how a hostile manifest would make a materializer write through a link). Memory: one path per depth level.
 */
export class ManifestOrderChecker {
  private previous: string | undefined
  private readonly openDirs: string[] = []
  private count = 0
  /**
   * What each `linkable` file holds, so that a hardlink entry is checked to repeat its target exactly: a
   * reader that materializes `linkTo` with link() must get the bytes, mode and times the entry claims.
   * Memory: one short string per file that had several links at the publisher.
   */
  private readonly linkable = new Map<string, string>()

  check (entry: ManifestEntry): void {
    if (++this.count > MAX_MANIFEST_ENTRIES) throw new LimitExceededError('manifest entries', this.count, MAX_MANIFEST_ENTRIES)
    if (this.previous !== undefined && comparePaths(this.previous, entry.path) >= 0) {
      throw new InvalidMessageError(`manifest entry ${JSON.stringify(entry.path)} is not after ${JSON.stringify(this.previous)} (duplicate or unsorted)`)
    }
    this.previous = entry.path
    const parent = parentOf(entry.path)
    while (this.openDirs.length > 0 && this.openDirs[this.openDirs.length - 1] !== parent) this.openDirs.pop()
    if (parent !== '' && this.openDirs.length === 0) {
      throw new InvalidMessageError(`manifest entry ${JSON.stringify(entry.path)}: parent ${JSON.stringify(parent)} is not a directory of this manifest`)
    }
    if (entry.type === 'dir') this.openDirs.push(entry.path)
    if (entry.type === 'file') this.checkLink(entry)
  }

  private checkLink (entry: FileEntry): void {
    if (entry.linkTo !== undefined) {
      if (entry.linkable === true) throw new InvalidMessageError(`manifest entry ${JSON.stringify(entry.path)}: a hardlink cannot itself be a link target`)
      const target = this.linkable.get(entry.linkTo)
      if (target === undefined) throw new InvalidMessageError(`manifest entry ${JSON.stringify(entry.path)}: hardlink to ${JSON.stringify(entry.linkTo)}, which is not an earlier linkable file`)
      if (target !== fileFingerprint(entry)) throw new InvalidMessageError(`manifest entry ${JSON.stringify(entry.path)}: hardlink to ${JSON.stringify(entry.linkTo)} with other content, mode or times`)
    }
    if (entry.linkable === true) this.linkable.set(entry.path, fileFingerprint(entry))
  }

  get entries (): number { return this.count }
}

/** A fingerprint spells out the chunk list itself up to this many chunks, and hashes longer ones. */
const SPELLED_CHUNKS = 4

/**
 * Size, mode, times and the chunk list of a file entry, as one string (equal exactly when all are). Every
 * file with several links at the publisher gets one — in a tree built as hardlinks of the previous one,
 * every file — so the usual one-chunk file is spelled out (its id in latin1, 32 characters) instead of
 * paying a SHA-256 object per file; only long chunk lists are hashed, to keep the string short.
 */
export function fileFingerprint (entry: FileEntry): string {
  const head = `${entry.size}:${entry.mode}:${entry.mtimeMs}:${entry.mtimeNs ?? 0}:`
  if (entry.chunks.length <= SPELLED_CHUNKS) {
    let spelled = head
    for (const c of entry.chunks) spelled += `${Buffer.from(c.id.buffer, c.id.byteOffset, c.id.byteLength).toString('latin1')}${c.size};`
    return spelled
  }
  const hash = createHash('sha256')
  for (const c of entry.chunks) hash.update(c.id)
  hash.update(Uint32Array.from(entry.chunks, c => c.size))
  return `${head}#${hash.digest('base64')}`
}

/** Incremental writer: feed entries in canonical order, take the bytes as they come. */
export class ManifestWriter {
  private readonly checker = new ManifestOrderChecker()
  private fileBytes = 0

  constructor (readonly header: ManifestHeader) {}

  start (): Uint8Array { return encodeHeader(this.header) }

  write (entry: ManifestEntry): Uint8Array {
    this.checker.check(entry)
    if (entry.type === 'file') this.fileBytes += entry.size
    return encodeEntry(entry)
  }

  get entryCount (): number { return this.checker.entries }
  get totalFileBytes (): number { return this.fileBytes }
}

/**
 * Incremental, bounded reader for untrusted manifest bytes: push() bytes in order (for example chunk by
 * chunk as they are fetched), take decoded entries. end() checks that nothing is left over.
 */
export class ManifestReader {
  private buffer: Uint8Array = new Uint8Array(0)
  private headerValue: DecodedHeader | undefined
  private readonly checker = new ManifestOrderChecker()
  private count = 0

  /**
   * `structureChecked`: these exact bytes already passed a whole read with the structure checks (order,
   * parents, hardlinks), so only records are decoded and checked: the order checker's hardlink map and path
   * comparisons were a large share of each pass a subscriber makes over a manifest of many small files.
   */
  constructor (private readonly options: { structureChecked?: boolean } = {}) {}

  get header (): ManifestHeader | undefined {
    if (this.headerValue === undefined) return undefined
    const { format: _format, ...header } = this.headerValue
    return header
  }
  /** The format the manifest was written in (1 or 2), once the header is read. */
  get format (): number | undefined { return this.headerValue?.format }
  get entryCount (): number { return this.count }

  push (bytes: Uint8Array): ManifestEntry[] {
    this.buffer = this.buffer.byteLength === 0 ? bytes : Buffer.concat([this.buffer, bytes])
    const out: ManifestEntry[] = []
    let offset = 0
    for (;;) {
      const varint = decodeUvarint(this.buffer, offset)
      if (varint === undefined) break
      const [length, lengthBytes] = varint
      if (length > MAX_ENTRY_BYTES) throw new LimitExceededError('manifest record size', length, MAX_ENTRY_BYTES)
      if (offset + lengthBytes + length > this.buffer.byteLength) break
      const value = decodeUntrusted(this.buffer.subarray(offset + lengthBytes, offset + lengthBytes + length), 'manifest record')
      offset += lengthBytes + length
      if (this.headerValue === undefined) {
        this.headerValue = decodeHeaderValue(value)
        continue
      }
      const entry = decodeEntryValue(value, this.headerValue)
      if (++this.count > MAX_MANIFEST_ENTRIES) throw new LimitExceededError('manifest entries', this.count, MAX_MANIFEST_ENTRIES)
      if (this.options.structureChecked !== true) this.checker.check(entry)
      out.push(entry)
    }
    this.buffer = this.buffer.subarray(offset)
    return out
  }

  end (): void {
    if (this.buffer.byteLength !== 0) throw new InvalidMessageError(`manifest ends inside a record (${this.buffer.byteLength} bytes left)`)
    if (this.headerValue === undefined) throw new InvalidMessageError('manifest has no header')
  }
}

/** Decodes a whole manifest held in memory (tests, small trees). */
export function decodeManifest (bytes: Uint8Array): { header: ManifestHeader, entries: ManifestEntry[] } {
  const reader = new ManifestReader()
  const entries = reader.push(bytes)
  reader.end()
  return { header: reader.header as ManifestHeader, entries }
}

/**
 * The root of a version: the list of the manifest's own chunks plus totals. Its SHA-256 is what the
 * envelope signs, so one signature covers every byte of the version.
 */
export interface ManifestRoot {
  manifestSize: number
  entryCount: number
  totalFileBytes: number
  chunks: ChunkRef[]
}

export function encodeRoot (root: ManifestRoot): Uint8Array {
  const ids = new Uint8Array(root.chunks.length * CHUNK_ID_BYTES)
  root.chunks.forEach((c, i) => ids.set(c.id, i * CHUNK_ID_BYTES))
  const bytes = encodeCanonical([ROOT_TAG, ROOT_FORMAT_VERSION, root.manifestSize, root.entryCount, root.totalFileBytes, ids, root.chunks.map(c => c.size)])
  if (bytes.byteLength > MAX_ROOT_BYTES) throw new LimitExceededError('root size', bytes.byteLength, MAX_ROOT_BYTES)
  return bytes
}

export function decodeRoot (bytes: Uint8Array): ManifestRoot {
  if (bytes.byteLength > MAX_ROOT_BYTES) throw new LimitExceededError('root size', bytes.byteLength, MAX_ROOT_BYTES)
  const t = expectTuple(decodeUntrusted(bytes, 'root'), 'root', ROOT_TAG, ROOT_FORMAT_VERSION, 7)
  const manifestSize = expectInt(t[2], 'root manifestSize', 1, Number.MAX_SAFE_INTEGER)
  const entryCount = expectInt(t[3], 'root entryCount', 0, MAX_MANIFEST_ENTRIES)
  const totalFileBytes = expectInt(t[4], 'root totalFileBytes', 0, Number.MAX_SAFE_INTEGER)
  const ids = expectBytes(t[5], 'root chunk ids', undefined, MAX_ROOT_BYTES)
  const sizes = t[6]
  if (!Array.isArray(sizes) || ids.byteLength !== sizes.length * CHUNK_ID_BYTES) throw new InvalidMessageError('root: chunk ids and sizes disagree')
  let total = 0
  const chunks = sizes.map((s: unknown, i: number) => {
    const size = expectInt(s, `root chunk ${i} size`, 1, MAX_CHUNK_SIZE)
    total += size
    return { id: ids.subarray(i * CHUNK_ID_BYTES, (i + 1) * CHUNK_ID_BYTES), size }
  })
  if (total !== manifestSize) throw new InvalidMessageError(`root: manifest chunks add up to ${total}, manifestSize says ${manifestSize}`)
  return { manifestSize, entryCount, totalFileBytes, chunks }
}
