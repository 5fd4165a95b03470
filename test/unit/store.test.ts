import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, readdirSync } from 'node:fs'
import { mkdtemp, open, rename, rm, symlink, truncate, unlink, writeFile, mkdir } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { chunkIdOf, toHex } from '../../protocol/chunk-id.js'
import { MAX_CHUNK_SIZE } from '../../protocol/limits.js'
import { signatureBytes } from '../../protocol/signature-delta.js'
import { openStore, type Store } from '../../agent/store/index.js'
import { PREFIX, range } from '../../agent/store/db.js'
import { fileToLoc, locToFile } from '../../agent/store/location-keys.js'
import { READ_AHEAD_CHUNKS } from '../../agent/store/location-cache.js'
import type { ChunkLocation, PlacedChunk, ScanCacheEntry, VersionRecord } from '../../agent/store/types.js'

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..')

let dir: string
let store: Store | undefined
let corrupt: Array<{ id: string, location: ChunkLocation, reason: string }>

async function openTestStore (): Promise<Store> {
  store = await openStore(join(dir, 'db'), {
    events: { onCorrupt: (id, location, reason) => corrupt.push({ id: toHex(id), location, reason }) },
  })
  return store
}

/** Writes `bytes` and cuts it into fixed-size chunks (the chunker's job; any cut points do here). */
async function writeChunked (path: string, bytes: Buffer, size = 1000): Promise<PlacedChunk[]> {
  await mkdir(dirname(path), { recursive: true })
  await writeFile(path, bytes)
  const chunks: PlacedChunk[] = []
  for (let offset = 0; offset < bytes.length; offset += size) {
    const piece = bytes.subarray(offset, Math.min(offset + size, bytes.length))
    chunks.push({ id: chunkIdOf(piece), offset, size: piece.length })
  }
  return chunks
}

/** Every LOC key has its FILE mirror and vice versa; returns the number of locations. */
async function checkMirrors (s: Store): Promise<number> {
  const loc = (await s.db.keys(range(Buffer.of(PREFIX.LOC))).all()).map(k => k.toString('hex'))
  const file = await s.db.keys(range(Buffer.of(PREFIX.FILE))).all()
  expect(file.map(k => fileToLoc(k).toString('hex')).sort()).toEqual([...loc].sort())
  for (const k of await s.db.keys(range(Buffer.of(PREFIX.LOC))).all()) expect(fileToLoc(locToFile(k)).equals(k)).toBe(true)
  return loc.length
}

function openFds (): number | undefined {
  return existsSync('/proc/self/fd') ? readdirSync('/proc/self/fd').length : undefined
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'deltamesh-store-'))
  corrupt = []
})

afterEach(async () => {
  await store?.close()
  store = undefined
  await rm(dir, { recursive: true, force: true })
})

describe('chunk index', () => {
  it('indexes a file and reads every chunk back verified', async () => {
    const s = await openTestStore()
    const src = join(dir, 'src')
    const root = await s.index.addRoot({ path: src, kind: 'source', tree: 't' })
    const bytes = randomBytes(10_500)
    const chunks = await writeChunked(join(src, 'a/b.bin'), bytes)
    await s.index.indexFile(root.id, 'a/b.bin', chunks)
    for (const c of chunks) {
      expect(await s.index.has(c.id)).toBe(true)
      expect(await s.index.locations(c.id)).toEqual([{ rootId: root.id, relPath: 'a/b.bin', offset: c.offset, size: c.size }])
      const got = await s.index.readChunk(c.id)
      expect(got && Buffer.from(got).equals(bytes.subarray(c.offset, c.offset + c.size))).toBe(true)
    }
    expect(await s.index.has(chunkIdOf(Buffer.from('nope')))).toBe(false)
    expect(await s.index.readChunk(chunkIdOf(Buffer.from('nope')))).toBeUndefined()
    expect(await s.index.hasMany([chunks[3]!.id, chunkIdOf(Buffer.from('nope')), chunks[0]!.id])).toEqual([true, false, true])
    expect(await checkMirrors(s)).toBe(chunks.length)
    expect(corrupt).toEqual([])
  })

  it('serves another location when a file was edited behind its back, and drops the bad one', async () => {
    const s = await openTestStore()
    const root = await s.index.addRoot({ path: join(dir, 'v1'), kind: 'version' })
    const bytes = randomBytes(3000)
    const chunks = await writeChunked(join(dir, 'v1/x'), bytes)
    await writeChunked(join(dir, 'v1/y'), bytes)
    await s.index.indexFile(root.id, 'x', chunks)
    await s.index.indexFile(root.id, 'y', chunks)
    const c = chunks[1]!
    expect(await s.index.readChunk(c.id)).toBeDefined() // leaves x's handle in the cache

    const fh = await open(join(dir, 'v1/x'), 'r+')
    await fh.write(Buffer.from('edited'), 0, 6, c.offset + 10)
    await fh.close()

    const got = await s.index.readChunk(c.id)
    expect(got && Buffer.from(got).equals(bytes.subarray(c.offset, c.offset + c.size))).toBe(true)
    expect(corrupt).toEqual([{ id: toHex(c.id), location: { rootId: root.id, relPath: 'x', offset: c.offset, size: c.size }, reason: 'hash mismatch' }])
    expect((await s.index.locations(c.id)).map(l => l.relPath)).toEqual(['y'])
    // The other chunks of x were not touched and stay indexed.
    expect((await s.index.locations(chunks[0]!.id)).map(l => l.relPath)).toEqual(['x', 'y'])

    await writeFile(join(dir, 'v1/y'), randomBytes(3000))
    expect(await s.index.readChunk(c.id)).toBeUndefined()
    expect(corrupt.map(e => e.location.relPath)).toEqual(['x', 'y'])
    expect(await s.index.has(c.id)).toBe(false)
    await checkMirrors(s)
  })

  it('reads a file\'s chunks in order with one location lookup per READ_AHEAD_CHUNKS, and a cached location is only a hint', async () => {
    const s = await openTestStore()
    const root = await s.index.addRoot({ path: join(dir, 'v'), kind: 'version' })
    const bytes = randomBytes(150_000)
    const chunks = await writeChunked(join(dir, 'v/big'), bytes)
    await s.index.indexFile(root.id, 'big', chunks)
    let iterators = 0
    const iterator = s.db.iterator.bind(s.db)
    s.db.iterator = ((...args: Parameters<typeof iterator>) => { iterators++; return iterator(...args) }) as typeof s.db.iterator
    for (const c of chunks) {
      const got = await s.index.readChunk(c.id)
      expect(got && Buffer.from(got).equals(bytes.subarray(c.offset, c.offset + c.size))).toBe(true)
    }
    // 150 chunks: a lookup and a read-ahead of the 64 after it, three times (not 150 lookups)
    expect(iterators).toBe(2 * Math.ceil(chunks.length / (READ_AHEAD_CHUNKS + 1)))

    // the same bytes now lie in another file only: the cached location fails its hash, the index finds the other
    const c = chunks[100]!
    await writeChunked(join(dir, 'v/copy'), bytes)
    await s.index.indexFile(root.id, 'copy', chunks)
    await writeFile(join(dir, 'v/big'), randomBytes(150_000))
    const got = await s.index.readChunk(c.id)
    expect(got && Buffer.from(got).equals(bytes.subarray(c.offset, c.offset + c.size))).toBe(true)
    expect(corrupt.map(e => [e.location.relPath, e.reason])).toEqual([['big', 'hash mismatch']])
    // deleting locations clears the cache: a removed file is not read again
    await s.index.removeFile(root.id, 'copy')
    expect(await s.index.readChunk(chunks[101]!.id)).toBeUndefined()
    await checkMirrors(s)
  })

  it('reads ahead past the end of a file into the next files of its root: small files cost no lookup each', async () => {
    const s = await openTestStore()
    const root = await s.index.addRoot({ path: join(dir, 'v'), kind: 'version' })
    const other = await s.index.addRoot({ path: join(dir, 'w'), kind: 'version' })
    const files: Array<{ name: string, bytes: Buffer, chunk: PlacedChunk }> = []
    for (let i = 0; i < 200; i++) {
      const name = `d${Math.floor(i / 50)}/f${String(i).padStart(3, '0')}`
      const bytes = randomBytes(300)
      const [chunk] = await writeChunked(join(dir, 'v', name), bytes)
      await s.index.indexFile(root.id, name, [chunk!])
      files.push({ name, bytes, chunk: chunk! })
    }
    // the next root's files must not be taken for this root's
    const lone = await writeChunked(join(dir, 'w/a'), randomBytes(300))
    await s.index.indexFile(other.id, 'a', lone)
    let iterators = 0
    const iterator = s.db.iterator.bind(s.db)
    s.db.iterator = ((...args: Parameters<typeof iterator>) => { iterators++; return iterator(...args) }) as typeof s.db.iterator
    for (const f of files) {
      const got = await s.index.readChunk(f.chunk.id)
      expect(got && Buffer.from(got).equals(f.bytes)).toBe(true)
    }
    // 200 one-chunk files in path order: a lookup and a read-ahead of the 64 after it, four times
    expect(iterators).toBe(2 * Math.ceil(files.length / (READ_AHEAD_CHUNKS + 1)))
    iterators = 0
    expect(await s.index.readChunk(lone[0]!.id)).toBeDefined()
    expect(iterators).toBe(2) // looked up: the last read-ahead stopped at its root's end
  })

  it('drops locations of truncated and deleted files', async () => {
    const s = await openTestStore()
    const root = await s.index.addRoot({ path: join(dir, 'v'), kind: 'version' })
    const chunks = await writeChunked(join(dir, 'v/t'), randomBytes(3000))
    const gone = await writeChunked(join(dir, 'v/d'), randomBytes(2000))
    await s.index.indexFile(root.id, 't', chunks)
    await s.index.indexFile(root.id, 'd', gone)
    await truncate(join(dir, 'v/t'), 2500)
    await unlink(join(dir, 'v/d'))

    expect(await s.index.readChunk(chunks[2]!.id)).toBeUndefined()
    expect(await s.index.readChunk(chunks[1]!.id)).toBeDefined()
    expect(await s.index.readChunk(gone[0]!.id)).toBeUndefined()
    expect(corrupt.map(e => e.reason)).toEqual(['short read: 500 of 1000 bytes', 'file gone (ENOENT)'])
    // hasFiles: t lost one location, d lost one, an empty file has nothing to lose
    expect(await s.index.hasFiles(root.id, [{ relPath: 't', chunks }, { relPath: 'd', chunks: gone }, { relPath: 'e', chunks: [] }])).toEqual([false, false, true])
    await s.index.indexFile(root.id, 't', chunks.slice(0, 2))
    expect(await s.index.hasFiles(root.id, [{ relPath: 't', chunks: chunks.slice(0, 2) }, { relPath: 'd', chunks: gone.slice(1) }])).toEqual([true, true])
    expect(await s.index.has(chunks[2]!.id)).toBe(false)
    expect(await s.index.has(gone[0]!.id)).toBe(false)
    expect(await s.index.has(gone[1]!.id)).toBe(true) // found when asked for, not before
    await checkMirrors(s)
  })

  it('looks at the file now at the path after it was replaced, and never reads through a symlink', async () => {
    const s = await openTestStore()
    const root = await s.index.addRoot({ path: join(dir, 'v'), kind: 'version' })
    const bytes = randomBytes(2000)
    const chunks = await writeChunked(join(dir, 'v/f'), bytes)
    await s.index.indexFile(root.id, 'f', chunks)
    expect(await s.index.readChunk(chunks[0]!.id)).toBeDefined()
    // Atomic replace (new inode) with the first chunk still the same and the second changed.
    const next = Buffer.concat([bytes.subarray(0, 1000), randomBytes(1000)])
    await writeFile(join(dir, 'v/f.tmp'), next)
    await rename(join(dir, 'v/f.tmp'), join(dir, 'v/f'))
    expect(await s.index.readChunk(chunks[1]!.id)).toBeUndefined()
    expect(await s.index.readChunk(chunks[0]!.id)).toBeDefined()
    expect(corrupt.map(e => [e.location.offset, e.reason])).toEqual([[1000, 'hash mismatch']])

    // the same bytes behind a symlink planted at the path: not read, the location dropped
    await writeFile(join(dir, 'elsewhere'), next)
    await rm(join(dir, 'v/f'))
    await symlink(join(dir, 'elsewhere'), join(dir, 'v/f'))
    expect(await s.index.readChunk(chunks[0]!.id)).toBeUndefined()
    expect(corrupt.map(e => e.reason)).toEqual(['hash mismatch', 'file gone (ELOOP)'])
  })

  it('indexNewFiles and concurrent addLocations (one grouped write) record every location with its mirror', async () => {
    const s = await openTestStore()
    const root = await s.index.addRoot({ path: join(dir, 'src'), kind: 'staging' })
    const files = await Promise.all(['a', 'b', 'c/d'].map(async name => ({ relPath: name, chunks: await writeChunked(join(dir, 'src', name), randomBytes(3000)) })))
    await s.index.indexNewFiles(root.id, files.slice(0, 2))
    // the last file's chunks one by one, all at once: callers arriving during a write share the next one
    const last = files[2]!
    await Promise.all(last.chunks.map(async c => { await s.index.addLocations(c.id, [{ rootId: root.id, relPath: last.relPath, offset: c.offset, size: c.size }]) }))
    for (const f of files) for (const c of f.chunks) expect(await s.index.readChunk(c.id)).toBeDefined()
    expect(await checkMirrors(s)).toBe(files.reduce((n, f) => n + f.chunks.length, 0))
    await expect(s.index.indexNewFiles(root.id + 99, files)).rejects.toThrow()
    expect(corrupt).toEqual([])
  })

  it('indexFile replaces the previous locations of the file; removeFile drops them', async () => {
    const s = await openTestStore()
    const root = await s.index.addRoot({ path: join(dir, 'src'), kind: 'source' })
    const first = await writeChunked(join(dir, 'src/f'), randomBytes(4000))
    const other = await writeChunked(join(dir, 'src/f2'), randomBytes(1000))
    await s.index.indexFile(root.id, 'f', first)
    await s.index.indexFile(root.id, 'f2', other)
    const second = await writeChunked(join(dir, 'src/f'), Buffer.concat([Buffer.alloc(1000, 1), randomBytes(500)]))
    await s.index.indexFile(root.id, 'f', second)
    for (const c of first) expect(await s.index.has(c.id)).toBe(false)
    for (const c of second) expect(await s.index.readChunk(c.id)).toBeDefined()
    expect(await checkMirrors(s)).toBe(second.length + other.length)

    // Re-indexing the same chunks concurrently must not leave stale or duplicate entries.
    await Promise.all([s.index.indexFile(root.id, 'f', first), s.index.indexFile(root.id, 'f', second), s.index.indexFile(root.id, 'f', second)])
    expect(await checkMirrors(s)).toBe(second.length + other.length)

    await s.index.removeFile(root.id, 'f')
    for (const c of second) expect(await s.index.has(c.id)).toBe(false)
    expect(await s.index.has(other[0]!.id)).toBe(true) // 'f' is not a prefix match for 'f2'
    expect(await checkMirrors(s)).toBe(other.length)
    expect(corrupt).toEqual([])
  })

  it('removeRoot drops every location under it and nothing else', async () => {
    const s = await openTestStore()
    const a = await s.index.addRoot({ path: join(dir, 'a'), kind: 'version', tree: 't', seq: 1 })
    const b = await s.index.addRoot({ path: join(dir, 'b'), kind: 'version', tree: 't', seq: 2 })
    const shared = await writeChunked(join(dir, 'a/f'), randomBytes(5000))
    await writeChunked(join(dir, 'b/f'), Buffer.concat([await readAll(join(dir, 'a/f'))]))
    const onlyA = await writeChunked(join(dir, 'a/g/h'), randomBytes(3000))
    await s.index.indexFile(a.id, 'f', shared)
    await s.index.indexFile(a.id, 'g/h', onlyA)
    await s.index.indexFile(b.id, 'f', shared)
    await s.index.removeRoot(a.id)
    expect(await s.index.getRoot(a.id)).toBeUndefined()
    expect((await s.index.listRoots()).map(r => r.id)).toEqual([b.id])
    for (const c of onlyA) expect(await s.index.has(c.id)).toBe(false)
    for (const c of shared) expect(await s.index.locations(c.id)).toEqual([{ rootId: b.id, relPath: 'f', offset: c.offset, size: c.size }])
    expect(await checkMirrors(s)).toBe(shared.length)
    await expect(s.index.indexFile(a.id, 'f', shared)).rejects.toHaveProperty('name', 'UnknownRootError')
  })

  it('keeps serving a staging directory renamed into place after updateRoot', async () => {
    const s = await openTestStore()
    const staging = await s.index.addRoot({ path: join(dir, 'staging-1'), kind: 'staging', tree: 't', seq: 1 })
    const chunks = await writeChunked(join(dir, 'staging-1/pkg/a.rpm'), randomBytes(2500))
    await s.index.indexFile(staging.id, 'pkg/a.rpm', chunks)
    expect(await s.index.readChunk(chunks[0]!.id)).toBeDefined() // a cached handle on the old path
    await rename(join(dir, 'staging-1'), join(dir, 'v1'))
    await s.index.updateRoot({ ...staging, path: join(dir, 'v1'), kind: 'version' })
    for (const c of chunks) expect(await s.index.readChunk(c.id)).toBeDefined()
    expect(corrupt).toEqual([])
    expect(await s.index.getRoot(staging.id)).toEqual({ ...staging, path: join(dir, 'v1'), kind: 'version' })
    await expect(s.index.updateRoot({ ...staging, id: 999 })).rejects.toHaveProperty('name', 'UnknownRootError')
  })

  it('addLocations records single placements; refuses bad ids, paths and sizes', async () => {
    const s = await openTestStore()
    const root = await s.index.addRoot({ path: join(dir, 'st'), kind: 'staging' })
    const [c] = await writeChunked(join(dir, 'st/f'), randomBytes(700))
    await s.index.addLocations(c!.id, [{ rootId: root.id, relPath: 'f', offset: 0, size: 700 }])
    expect(await s.index.readChunk(c!.id)).toHaveLength(700)
    await expect(s.index.addLocations(c!.id, [{ rootId: root.id, relPath: '../f', offset: 0, size: 700 }])).rejects.toHaveProperty('name', 'InvalidPathError')
    await expect(s.index.indexFile(root.id, 'f', [{ id: c!.id, offset: 0, size: MAX_CHUNK_SIZE + 1 }])).rejects.toHaveProperty('name', 'LimitExceededError')
    await expect(s.index.indexFile(root.id, 'f', [{ id: new Uint8Array(5), offset: 0, size: 5 }])).rejects.toHaveProperty('name', 'InvalidLocationError')
    await expect(s.index.addRoot({ path: 'relative', kind: 'source' })).rejects.toThrow(TypeError)
    expect(await checkMirrors(s)).toBe(1)
  })

  it('honours an aborted signal', async () => {
    const s = await openTestStore()
    const ac = new AbortController()
    ac.abort()
    await expect(s.index.readChunk(chunkIdOf(Buffer.from('x')), ac.signal)).rejects.toHaveProperty('name', 'AbortError')
  })

  it('persists roots and the root id counter; close() leaves no file descriptors open', async () => {
    const before = openFds()
    let s = await openTestStore()
    const root = await s.index.addRoot({ path: join(dir, 'v'), kind: 'version', tree: 't', seq: 7 })
    const files = await Promise.all([1, 2, 3, 4, 5, 6].map(async n => await writeChunked(join(dir, `v/${n}`), randomBytes(1500))))
    for (const [n, chunks] of files.entries()) await s.index.indexFile(root.id, `${n + 1}`, chunks)
    await Promise.all(files.flat().map(async c => await s.index.readChunk(c.id)))
    await s.close()
    if (before !== undefined) expect(openFds()).toBe(before)
    s = await openTestStore()
    expect(await s.index.listRoots()).toEqual([root])
    expect((await s.index.addRoot({ path: join(dir, 'w'), kind: 'source' })).id).toBe(root.id + 1)
    expect(await s.index.readChunk(files[0]![0]!.id)).toBeDefined()
  })
})

describe('catalog', () => {
  it('round-trips blobs and refuses a corrupted one', async () => {
    const events: string[] = []
    store = await openStore(join(dir, 'db'), { events: { onCorruptBlob: id => events.push(toHex(id)) } })
    const s = store
    const bytes = randomBytes(5000)
    const id = chunkIdOf(bytes)
    await s.catalog.putBlob(id, bytes)
    expect(Buffer.from((await s.catalog.getBlob(id))!).equals(bytes)).toBe(true)
    expect(await s.catalog.hasBlob(id)).toBe(true)
    await expect(s.catalog.putBlob(chunkIdOf(Buffer.from('other')), bytes)).rejects.toHaveProperty('name', 'ChunkHashMismatchError')

    await s.db.put(Buffer.concat([Buffer.of(PREFIX.BLOB), id]), Buffer.concat([bytes.subarray(0, 4999), Buffer.of(bytes[4999]! ^ 1)]))
    expect(await s.catalog.getBlob(id)).toBeUndefined()
    expect(await s.catalog.hasBlob(id)).toBe(false)
    expect(events).toEqual([toHex(id)])

    await s.catalog.putBlob(id, bytes)
    await s.catalog.deleteBlob(id)
    expect(await s.catalog.getBlob(id)).toBeUndefined()
  })

  it('reads several deltas at once, in the order asked, a malformed key answered as absent', async () => {
    const s = await openTestStore()
    const k = (n: number): Uint8Array => chunkIdOf(Buffer.from(`delta key ${n}`))
    await s.catalog.putDelta(k(1), Buffer.from('one'))
    await s.catalog.putDelta(k(3), Buffer.from('three'))
    const got = await s.catalog.getDeltas([k(3), k(2), Buffer.from('short'), k(1)])
    expect(got.map(v => v === undefined ? undefined : Buffer.from(v).toString())).toEqual(['three', undefined, undefined, 'one'])
    expect(await s.catalog.getDeltas([Buffer.from('short')])).toEqual([undefined])
  })

  it('signatures: one or many stored alike; a malformed id or an oversize signature is refused and a batch holding one writes nothing', async () => {
    const s = await openTestStore()
    const id = (n: number): Uint8Array => chunkIdOf(Buffer.from(`signed ${n}`))
    const limit = signatureBytes(MAX_CHUNK_SIZE)
    await s.catalog.putSignature(id(1), Buffer.from('one'))
    await s.catalog.putSignatures([[id(2), Buffer.from('two')], [id(3), Buffer.from('three')]])
    expect((await s.catalog.getSignatures([id(3), id(1), id(2)])).map(v => Buffer.from(v!).toString())).toEqual(['three', 'one', 'two'])
    await expect(s.catalog.putSignature(Buffer.from('short'), Buffer.from('x'))).rejects.toThrow(TypeError)
    await expect(s.catalog.putSignature(id(4), Buffer.alloc(limit + 1))).rejects.toHaveProperty('name', 'LimitExceededError')
    await expect(s.catalog.putSignatures([[id(5), Buffer.from('five')], [id(6), Buffer.alloc(limit + 1)]])).rejects.toHaveProperty('name', 'LimitExceededError')
    expect(await s.catalog.getSignatures([id(4), id(5), id(6)])).toEqual([undefined, undefined, undefined])
    await s.catalog.deleteSignatures([id(1), id(3), Buffer.from('short')])
    expect((await s.catalog.getSignatures([id(1), id(2), id(3)])).map(v => v === undefined ? undefined : Buffer.from(v).toString())).toEqual([undefined, 'two', undefined])
  })

  it('lists versions in numeric seq order, one tree at a time', async () => {
    const s = await openTestStore()
    const v = (tree: string, seq: number): VersionRecord => ({ tree, seq, envelope: Buffer.from(`env-${tree}-${seq}`), state: 'complete' })
    for (const seq of [100, 2, 2 ** 33, 10, 256]) await s.catalog.putVersion(v('rhel/BaseOS', seq))
    await s.catalog.putVersion(v('rhel', 5))
    await s.catalog.putVersion({ ...v('rhel/BaseOS/x', 1), state: 'failed', error: 'boom', rootId: 3, path: '/srv/x', stats: { files: 1, bytes: 2, chunks: 3, newBytes: 4, newChunks: 5, durationMs: 6.5 } })
    const list = await s.catalog.listVersions('rhel/BaseOS')
    expect(list.map(r => r.seq)).toEqual([2, 10, 100, 256, 2 ** 33])
    expect(Buffer.from(list[0]!.envelope).toString()).toBe('env-rhel/BaseOS-2')
    expect(await s.catalog.listVersions('rhel')).toHaveLength(1)
    expect(await s.catalog.getVersion('rhel/BaseOS/x', 1)).toEqual({ tree: 'rhel/BaseOS/x', seq: 1, envelope: expect.anything(), state: 'failed', error: 'boom', rootId: 3, path: '/srv/x', stats: { files: 1, bytes: 2, chunks: 3, newBytes: 4, newChunks: 5, durationMs: 6.5 } })
    await s.catalog.deleteVersion('rhel/BaseOS', 10)
    expect((await s.catalog.listVersions('rhel/BaseOS')).map(r => r.seq)).toEqual([2, 100, 256, 2 ** 33])
    expect(await s.catalog.getVersion('rhel/BaseOS', 10)).toBeUndefined()
    await expect(s.catalog.listVersions('../x')).rejects.toHaveProperty('name', 'InvalidTreeNameError')
  })

  it('stores trees and small state', async () => {
    const s = await openTestStore()
    await s.catalog.putTree({ name: 'b/x', currentSeq: 3, retain: 2, include: ['*.rpm'] })
    await s.catalog.putTree({ name: 'a', subscribedTo: '/srv/a' })
    expect(await s.catalog.getTree('b/x')).toEqual({ name: 'b/x', currentSeq: 3, retain: 2, include: ['*.rpm'] })
    expect((await s.catalog.listTrees()).map(t => t.name)).toEqual(['a', 'b/x'])
    expect(await s.catalog.getTree('c')).toBeUndefined()

    await s.catalog.putState('sync/a', { done: [1, 2], peer: 'x' })
    expect(await s.catalog.getState('sync/a')).toEqual({ done: [1, 2], peer: 'x' })
    await s.catalog.deleteState('sync/a')
    expect(await s.catalog.getState('sync/a')).toBeUndefined()
    await expect(s.catalog.putState('x', undefined)).rejects.toThrow(TypeError)
  })

  it('puts, gets and prunes the scan cache per source', async () => {
    const s = await openTestStore()
    const entry = (n: number, contiguous = true): ScanCacheEntry => ({
      size: 3000 + n,
      mtimeMs: 1_700_000_000_123.5 + n,
      ctimeMs: 1_700_000_000_456.25 + n,
      ino: 1000 + n,
      chunks: [0, 1, 2].map(i => ({ id: chunkIdOf(Buffer.from(`${n}-${i}`)), offset: contiguous ? i * 1000 : i * 1000 + 7, size: 1000 + (i === 2 ? n : 0) })),
    })
    await s.catalog.putScanEntries('/src', [['a', entry(1)], ['d/b', entry(2, false)], ['d/c', entry(3)], ['e', { size: 0, mtimeMs: 1, ctimeMs: 3, ino: 2, chunks: [] }]])
    await s.catalog.putScanEntries('/src2', [['a', entry(4)]])
    expect(await s.catalog.getScanEntry('/src', 'a')).toEqual(entry(1))
    expect(await s.catalog.getScanEntry('/src', 'd/b')).toEqual(entry(2, false))
    expect(await s.catalog.getScanEntry('/src', 'e')).toEqual({ size: 0, mtimeMs: 1, ctimeMs: 3, ino: 2, chunks: [] })
    expect(await s.catalog.getScanEntry('/src', 'zz')).toBeUndefined()
    // the batched read gives the same answers, misses included, in the order asked
    expect(await s.catalog.getScanEntries('/src', ['d/b', 'zz', 'a', 'e'])).toEqual([entry(2, false), undefined, entry(1), { size: 0, mtimeMs: 1, ctimeMs: 3, ino: 2, chunks: [] }])
    expect(await s.catalog.getScanEntries('/src', [])).toEqual([])

    const asked: string[] = []
    await s.catalog.pruneScanCache('/src', p => { asked.push(p); return p !== 'd/b' && p !== 'e' })
    expect(asked).toEqual(['a', 'd/b', 'd/c', 'e'])
    expect(await s.catalog.getScanEntry('/src', 'd/b')).toBeUndefined()
    expect(await s.catalog.getScanEntry('/src', 'e')).toBeUndefined()
    expect(await s.catalog.getScanEntry('/src', 'd/c')).toEqual(entry(3))
    expect(await s.catalog.getScanEntry('/src2', 'a')).toEqual(entry(4)) // '/src' is not a prefix match for '/src2'
  })
})

describe('reopening', () => {
  it('reopens a database left by a killed process, with its data', async () => {
    const dbPath = join(dir, 'db')
    const blob = Buffer.from('written before the crash')
    const script = `
      import { openStore } from ${JSON.stringify(join(repoRoot, 'agent/store/index.ts'))}
      const s = await openStore(${JSON.stringify(dbPath)})
      const root = await s.index.addRoot({ path: '/srv/v1', kind: 'version' })
      const id = Buffer.from(${JSON.stringify(toHex(chunkIdOf(blob)))}, 'hex')
      await s.index.indexFile(root.id, 'f', [{ id, offset: 0, size: ${blob.length} }])
      await s.catalog.putBlob(id, Buffer.from(${JSON.stringify(blob.toString())}))
      await s.catalog.putVersion({ tree: 't', seq: 1, envelope: Buffer.from('e'), state: 'syncing' })
      process.stdout.write('ready\\n')
      setInterval(() => {}, 1000) // never closes: the parent kills it
    `
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] })
    const exited = new Promise<NodeJS.Signals | null>(resolve => child.once('exit', (_code, signal) => resolve(signal)))
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (d: Buffer) => { if (d.toString().includes('ready')) resolve() })
        child.once('exit', code => reject(new Error(`child exited early (${code}): ${stderr}`)))
      })
      // While the child lives, its lock is held.
      await expect(openStore(dbPath)).rejects.toHaveProperty('name', 'StoreLockedError')
    } finally {
      child.kill('SIGKILL')
    }
    expect(await exited).toBe('SIGKILL')

    const s = await openTestStore()
    const id = chunkIdOf(blob)
    expect(await s.index.listRoots()).toEqual([{ id: 1, path: '/srv/v1', kind: 'version' }])
    expect(await s.index.locations(id)).toEqual([{ rootId: 1, relPath: 'f', offset: 0, size: blob.length }])
    expect(Buffer.from((await s.catalog.getBlob(id))!).toString()).toBe(blob.toString())
    expect((await s.catalog.getVersion('t', 1))?.state).toBe('syncing')
    expect((await s.index.addRoot({ path: '/srv/v2', kind: 'version' })).id).toBe(2)
  })
})

async function readAll (path: string): Promise<Buffer> {
  const { readFile } = await import('node:fs/promises')
  return await readFile(path)
}
