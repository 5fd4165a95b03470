import { generateKeyPairSync, randomBytes } from 'node:crypto'
import { lstat, mkdir, mkdtemp, rename, rm, utimes, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { chunkIdOf } from '../../protocol/chunk-id.js'
import { ReadFiles, readHashes, runFsOp } from '../../agent/fs/fs-batch-ops.js'
import { bindStamp, settled, stampOf, vouches } from '../../agent/fs/file-stamp.js'
import { serializeError } from '../../agent/core/workers.js'
import { openStore, type Store } from '../../agent/store/index.js'
import { LevelChunkIndex } from '../../agent/store/chunk-index.js'
import { bootId, forgetStampsOfAnotherBoot } from '../../agent/store/file-stamps.js'
import { PREFIX, range } from '../../agent/store/db.js'
import type { PlacedChunk } from '../../agent/store/types.js'
import { publishVersion } from '../../agent/publish/publish.js'
import { chunkFile } from '../../agent/chunk/chunker.js'
import { DEFAULT_CHUNKING } from '../../protocol/chunking.js'
import { generateTree, listFiles } from '../../agent/demo/tree-gen.js'
import { silentLogger } from '../../agent/core/log.js'

// Serving without re-hashing (issue 17, decision 2): a chunk is served unhashed only from a file whose stamp
// is the one recorded when its chunks were known good; any change (in-place rewrite with mtime restored,
// another inode) means hash again, and refuse bytes that differ.

let dir: string
let store: Store | undefined
let corrupt: string[]

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'deltamesh-stamps-'))
  corrupt = []
})
afterEach(async () => {
  await store?.close()
  store = undefined
  await rm(dir, { recursive: true, force: true })
})

const MTIME_S = 1_700_000_000
const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

async function fileStamp (path: string): Promise<Buffer> {
  return stampOf(await lstat(path, { bigint: true }))
}

function chunksOf (bytes: Buffer, size: number): PlacedChunk[] {
  const out: PlacedChunk[] = []
  for (let offset = 0; offset < bytes.length; offset += size) {
    const piece = bytes.subarray(offset, Math.min(offset + size, bytes.length))
    out.push({ id: chunkIdOf(piece), offset, size: piece.length })
  }
  return out
}

/** A store with one root holding `bytes` at `name`, indexed in chunks of 1000 with the file's stamp. */
async function stamped (name: string, bytes: Buffer): Promise<{ s: Store, index: LevelChunkIndex, rootId: number, path: string, chunks: PlacedChunk[] }> {
  store = await openStore(join(dir, 'db'), { events: { onCorrupt: (_id, location, reason) => corrupt.push(`${location.relPath}@${location.offset}: ${reason}`) } })
  const path = join(dir, 'src', name)
  await mkdir(join(dir, 'src'))
  await writeFile(path, bytes)
  await utimes(path, MTIME_S, MTIME_S) // whole seconds: utimes can put them back exactly
  const root = await store.index.addRoot({ kind: 'source', path: join(dir, 'src'), tree: 't' })
  const chunks = chunksOf(bytes, 1000)
  await store.index.indexFile(root.id, name, chunks, await fileStamp(path))
  return { s: store, index: store.index as LevelChunkIndex, rootId: root.id, path, chunks }
}

describe('file stamps', () => {
  it('vouch only for the same 40 bytes, and a bound stamp only for its chunk', () => {
    const st = { dev: 1n, ino: 2n, size: 3n, mtimeNs: 4n, ctimeNs: 5n } as never
    const a = stampOf(st)
    const id = chunkIdOf(Buffer.from('x'))
    expect(vouches(a, stampOf(st), id)).toBe(true)
    expect(vouches(undefined, a, id)).toBe(false)
    expect(vouches(stampOf({ ...(st as object), ctimeNs: 6n } as never), a, id)).toBe(false)
    expect(vouches(bindStamp(a, id), a, id)).toBe(true)
    expect(vouches(bindStamp(a, id), a, chunkIdOf(Buffer.from('y')))).toBe(false)
    expect(vouches(a.subarray(0, 39), a, id)).toBe(false)
    expect(settled(a, Date.now())).toBe(true) // ctime 5 ns past the epoch
    expect(settled(stampOf({ ...(st as object), ctimeNs: BigInt(Date.now()) * 1_000_000n } as never), Date.now())).toBe(false)
  })

  it('a read step skips the SHA-256 when the stamp matches, and hashes when it does not', async () => {
    const bytes = randomBytes(3000)
    const path = join(dir, 'f')
    await writeFile(path, bytes)
    const stamp = await fileStamp(path)
    const op = { type: 'read' as const, path, offset: 1000, size: 1000, id: chunkIdOf(bytes.subarray(1000, 2000)) }
    const before = readHashes.count
    const files = new ReadFiles()
    try {
      expect(runFsOp({ ...op, stamp }, serializeError, files)).toMatchObject({ ok: true, value: { kind: 'ok', hashed: false } })
      expect(readHashes.count).toBe(before)
      const other = Buffer.from(stamp)
      other[39] = (other[39] ?? 0) ^ 1 // another ctime
      expect(runFsOp({ ...op, stamp: other }, serializeError, files)).toMatchObject({ ok: true, value: { kind: 'ok', hashed: true } })
      expect(readHashes.count).toBe(before + 1)
      // a stamp does not make wrong bytes right when it does not match: the wrong id is refused
      expect(runFsOp({ ...op, id: chunkIdOf(Buffer.from('no')), stamp: other }, serializeError, files)).toMatchObject({ ok: true, value: { kind: 'mismatch' } })
    } finally {
      files.closeAll()
    }
  })

  it('serves the chunks of a file whose stamp matches without re-hashing them', async () => {
    const bytes = randomBytes(3500)
    const { index, chunks } = await stamped('a.bin', bytes)
    for (const c of chunks) expect(Buffer.from(await index.readChunk(c.id) as Uint8Array)).toEqual(bytes.subarray(c.offset, c.offset + c.size))
    expect(index.readStats).toEqual({ hashed: 0, trusted: chunks.length })
  })

  it('re-hashes a file rewritten in place with its size and mtime restored (ctime changed), and refuses what differs', async () => {
    const bytes = randomBytes(3000)
    const { index, path, chunks } = await stamped('a.bin', bytes)
    const before = await lstat(path, { bigint: true })
    await sleep(30) // past the filesystem's timestamp tick (the agent records only settled stamps)
    const edited = Buffer.from(bytes)
    edited[1500] = (edited[1500] ?? 0) ^ 0xff
    await writeFile(path, edited)
    await utimes(path, MTIME_S, MTIME_S)
    const after = await lstat(path, { bigint: true })
    expect([after.ino, after.size, after.mtimeNs]).toEqual([before.ino, before.size, before.mtimeNs])
    expect(after.ctimeNs).not.toBe(before.ctimeNs)
    const [c0, c1] = chunks as [PlacedChunk, PlacedChunk]
    expect(await index.readChunk(c1.id)).toBeUndefined() // changed: hashed, refused, dropped
    expect(corrupt).toEqual(['a.bin@1000: hash mismatch'])
    expect(Buffer.from(await index.readChunk(c0.id) as Uint8Array)).toEqual(bytes.subarray(0, 1000)) // unchanged: hashed, served
    // the changed chunk is hashed twice (its first location, then every location), the other once
    expect(index.readStats).toEqual({ hashed: 3, trusted: 0 })
  })

  it('re-hashes a file replaced by another inode, even with the same bytes', async () => {
    const bytes = randomBytes(2000)
    const { index, path, chunks } = await stamped('a.bin', bytes)
    await writeFile(`${path}.new`, bytes)
    await rename(`${path}.new`, path)
    for (const c of chunks) expect(await index.readChunk(c.id)).toBeDefined()
    expect(index.readStats).toEqual({ hashed: 2, trusted: 0 })
    // another inode with other bytes: refused
    await writeFile(`${path}.new`, randomBytes(2000))
    await rename(`${path}.new`, path)
    expect(await index.readChunk((chunks[0] as PlacedChunk).id)).toBeUndefined()
  })

  it('forgets a stamp when the file\'s locations change, with removeFile and with removeRoot', async () => {
    const bytes = randomBytes(2000)
    const { s, index, rootId, chunks } = await stamped('a.bin', bytes)
    const stamps = async (): Promise<number> => (await s.db.keys(range(Buffer.of(PREFIX.STAMP))).all()).length
    expect(await stamps()).toBe(1)
    const [c0] = chunks as [PlacedChunk]
    await index.addLocations(c0.id, [{ rootId, relPath: 'a.bin', offset: 0, size: c0.size }])
    expect(await stamps()).toBe(0)
    expect(await index.readChunk(c0.id)).toBeDefined()
    expect(index.readStats).toEqual({ hashed: 1, trusted: 0 })
    await index.recordStamps(rootId, [{ relPath: 'a.bin', stamp: await fileStamp(join(dir, 'src', 'a.bin')) }])
    expect(await index.readChunk(c0.id)).toBeDefined()
    expect(index.readStats).toEqual({ hashed: 1, trusted: 1 })
    await index.indexFile(rootId, 'a.bin', chunks.slice(0, 1)) // other locations, no stamp
    expect(await stamps()).toBe(0)
    await index.recordStamps(rootId, [{ relPath: 'a.bin', stamp: await fileStamp(join(dir, 'src', 'a.bin')) }])
    await index.removeFile(rootId, 'a.bin')
    expect(await stamps()).toBe(0)
    await index.recordStamps(rootId, [{ relPath: 'a.bin', stamp: await fileStamp(join(dir, 'src', 'a.bin')) }])
    await index.removeRoot(rootId)
    expect(await stamps()).toBe(0)
  })

  it('a read that re-hashed a whole-file chunk of a settled file records a stamp for that chunk alone', async () => {
    const bytes = randomBytes(800)
    const { index, rootId, chunks } = await stamped('one.bin', bytes)
    await index.indexFile(rootId, 'one.bin', chunks) // unchanged locations: the stamp stays
    await index.removeFile(rootId, 'one.bin')
    await index.indexFile(rootId, 'one.bin', chunks) // no stamp now
    await sleep(2100) // RACY_STAMP_MS: a stamp this recent is not recorded
    const [c] = chunks as [PlacedChunk]
    expect(await index.readChunk(c.id)).toBeDefined()
    expect(await index.readChunk(c.id)).toBeDefined()
    expect(index.readStats).toEqual({ hashed: 1, trusted: 1 })
  })
})

describe('stamps across boots', () => {
  it('are all forgotten when the database is opened in another boot', async () => {
    const { s, index, rootId } = await stamped('a.bin', randomBytes(1500))
    expect(await s.db.keys(range(Buffer.of(PREFIX.STAMP))).all()).toHaveLength(1)
    await forgetStampsOfAnotherBoot(s.db, bootId()) // the same boot: kept
    expect(await s.db.keys(range(Buffer.of(PREFIX.STAMP))).all()).toHaveLength(1)
    await forgetStampsOfAnotherBoot(s.db, 'another-boot')
    expect(await s.db.keys(range(Buffer.of(PREFIX.STAMP))).all()).toHaveLength(0)
    expect(rootId).toBeGreaterThan(0)
    expect(index.readStats.trusted).toBe(0)
  })
})

describe('stamps recorded by a publish', () => {
  async function publishSrc (s: Store, now: () => number): Promise<void> {
    await publishVersion({
      tree: 'test/stamps', source: join(dir, 'src'), index: s.index, catalog: s.catalog, publisherKey: generateKeyPairSync('ed25519').privateKey,
      chunking: DEFAULT_CHUNKING, chunkFile: async (path, signal) => await chunkFile(path, DEFAULT_CHUNKING, { signal }), log: silentLogger(), now, force: true,
    })
  }

  it('serves a published tree without re-hashing; an edited file is hashed until published again', async () => {
    const s = store = await openStore(join(dir, 'db'))
    await generateTree(join(dir, 'src'), { seed: 'stamps', files: 20, largeBytes: 400 * 1024, largeFiles: 1, smallMax: 16 * 1024 })
    const later = (): number => Date.now() + 3_600_000 // past the racy window: every file is settled
    await publishSrc(s, later)
    const index = s.index as LevelChunkIndex
    const files = await listFiles(join(dir, 'src'))
    const chunksOf = async (rel: string): Promise<Array<{ id: Uint8Array }>> => await chunkFile(join(dir, 'src', rel), DEFAULT_CHUNKING)
    let total = 0
    for (const rel of files) for (const c of await chunksOf(rel)) { expect(await index.readChunk(c.id)).toBeDefined(); total++ }
    expect(index.readStats).toEqual({ hashed: 0, trusted: total })

    const victim = files[3] as string
    const path = join(dir, 'src', victim)
    await sleep(30)
    await utimes(path, MTIME_S, MTIME_S) // touched: same bytes, another ctime and mtime
    const [first] = await chunksOf(victim) as [{ id: Uint8Array }]
    expect(await index.readChunk(first.id)).toBeDefined()
    expect(index.readStats.hashed).toBe(1)
    await publishSrc(s, later) // verified (ctime changed): stamped again
    expect(await index.readChunk(first.id)).toBeDefined()
    expect(index.readStats).toEqual({ hashed: 1, trusted: total + 1 })
  })

  it('records no stamp for a file modified inside the racy window', async () => {
    const s = store = await openStore(join(dir, 'db'))
    await mkdir(join(dir, 'src'))
    await writeFile(join(dir, 'src', 'fresh'), randomBytes(5000))
    await publishSrc(s, Date.now)
    expect(await s.db.keys(range(Buffer.of(PREFIX.STAMP))).all()).toHaveLength(0)
  })
})
