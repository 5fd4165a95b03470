import { createHash, generateKeyPairSync } from 'node:crypto'
import { mkdir, mkdtemp, open, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { chunkIdOf, toHex } from '../../protocol/chunk-id.js'
import { openEnvelope } from '../../protocol/envelope.js'
import { HOLE_CHUNK_ID, isHoleChunk, type ChunkingParams } from '../../protocol/manifest.js'
import { DEFAULT_CHUNKING } from '../../protocol/chunking.js'
import { ChunkHasher, chunkFile } from '../../agent/chunk/chunker.js'
import { ChunkerPool } from '../../agent/chunk/pool.js'
import { verifyFileChunks } from '../../agent/chunk/verify.js'
import { isAllZero } from '../../agent/chunk/zeros.js'
import { silentLogger } from '../../agent/core/log.js'
import { HomeLayout } from '../../agent/core/home.js'
import { publishVersion } from '../../agent/publish/publish.js'
import { scanTree, type ChunkFileFn, type ScanCache } from '../../agent/scan/scanner.js'
import { openStore, type Store } from '../../agent/store/index.js'
import { loadRoot, readManifestEntries } from '../../agent/store/manifest-io.js'
import type { PlacedChunk, ScanCacheEntry } from '../../agent/store/types.js'
import { SwarmScheduler } from '../../agent/sync/swarm-scheduler.js'
import { Materializer, type MaterializeInit } from '../../agent/versions/materializer.js'
import { verifyVersion } from '../../agent/versions/verify.js'
import { pseudoRandom } from '../helpers/bytes.js'

// Sparse files (issue 23): the chunker records the all-zero chunks of a sparse file as holes, and only of a
// sparse one; the scan cache, the index, the scheduler and the materializer treat a hole as zeros nobody
// stores, fetches or writes.

const PARAMS: ChunkingParams = { algorithm: 'gear', avgBits: 12, minSize: 2048, maxSize: 64 * 1024 }
const MiB = 1024 * 1024

let dir: string
beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'deltamesh-sparse-')) })
afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

/** A file of `size` bytes made with truncate (all hole) and `pieces` written at their offsets. */
async function sparseFile (path: string, size: number, pieces: Array<[offset: number, bytes: Uint8Array]>): Promise<void> {
  await writeFile(path, '')
  await truncate(path, size)
  const fh = await open(path, 'r+')
  try { for (const [offset, bytes] of pieces) await fh.write(bytes, 0, bytes.byteLength, offset) } finally { await fh.close() }
}

const shape = (chunks: PlacedChunk[]): string[] => chunks.map(c => `${c.offset}+${c.size}`)
const holes = (chunks: ReadonlyArray<{ id: Uint8Array }>): number => chunks.filter(c => isHoleChunk(c.id)).length
const sha = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex')

describe('chunking a sparse file', () => {
  // data, a long zero run, data that starts with zeros inside its chunk, a zero tail
  const bytes = new Uint8Array(3 * MiB)
  bytes.set(pseudoRandom(100_000, 1), 0)
  bytes.set(pseudoRandom(50_000, 2), 2 * MiB + 777)

  const cut = (sparse: boolean, piece: number): PlacedChunk[] => {
    const h = new ChunkHasher(PARAMS, 0, { sparse })
    for (let p = 0; p < bytes.byteLength; p += piece) h.push(bytes.subarray(p, p + piece))
    return h.finish()
  }

  it('marks exactly the all-zero chunks as holes, at the boundaries a dense cut finds, however the bytes arrive', () => {
    const dense = cut(false, bytes.byteLength)
    expect(holes(dense)).toBe(0)
    for (const piece of [bytes.byteLength, 1 * MiB, 7919]) {
      const sparse = cut(true, piece)
      expect(shape(sparse)).toEqual(shape(dense))
      sparse.forEach((c, i) => {
        const zero = isAllZero(bytes.subarray(c.offset, c.offset + c.size))
        // a hole where every byte is zero; otherwise the same SHA-256 a dense cut gives (zeros held back are hashed)
        expect(toHex(c.id)).toBe(zero ? toHex(HOLE_CHUNK_ID) : toHex((dense[i] as PlacedChunk).id))
      })
      expect(holes(sparse)).toBeGreaterThan(20)
    }
  })

  it('the worker pool marks holes only when told the file is sparse, split across workers alike', async () => {
    const path = join(dir, 'disk.img')
    await sparseFile(path, 24 * MiB, [[0, pseudoRandom(10_000, 3)], [12 * MiB + 5, pseudoRandom(70_000, 4)], [24 * MiB - 3000, pseudoRandom(3000, 5)]])
    expect((await stat(path)).blocks * 512).toBeLessThan(24 * MiB)
    const pool = new ChunkerPool({ size: 2, splitThreshold: 4 * MiB })
    try {
      const inThread = await chunkFile(path, PARAMS, { sparse: true })
      const pooled = await pool.chunkFile(path, PARAMS, undefined, 24 * MiB, { sparse: true })
      expect(pooled.map(c => `${c.offset}+${c.size}:${toHex(c.id)}`)).toEqual(inThread.map(c => `${c.offset}+${c.size}:${toHex(c.id)}`))
      expect(holes(pooled)).toBeGreaterThan(100)
      const dense = await pool.chunkFile(path, PARAMS, undefined, 24 * MiB)
      expect(holes(dense)).toBe(0)
      expect(shape(dense)).toEqual(shape(pooled))

      // a hole verifies as zeros, in this thread and in the workers; data written into it does not
      expect(await verifyFileChunks(path, pooled)).toBe(true)
      expect(await pool.verifyFile(path, pooled)).toBe(true)
      const fh = await open(path, 'r+')
      await fh.write(Uint8Array.of(9), 0, 1, 6 * MiB)
      await fh.close()
      expect(await verifyFileChunks(path, pooled)).toBe(false)
      expect(await pool.verifyFile(path, pooled)).toBe(false)
    } finally {
      await pool.close()
    }
  })

  it('the scanner asks for holes of sparse files only, caches the list as sparse, and re-cuts a dense list of a sparse file', async () => {
    const src = join(dir, 'src')
    await mkdir(src)
    await sparseFile(join(src, 'sparse.img'), 4 * MiB, [[MiB, pseudoRandom(5000, 6)]])
    // as many zeros, written: a dense file's zeros are data
    await writeFile(join(src, 'zeros.bin'), new Uint8Array(4 * MiB))
    const asked: Record<string, boolean> = {}
    const chunk: ChunkFileFn = async (path, signal, _size, options) => {
      asked[path.slice(src.length + 1)] = options?.sparse === true
      return await chunkFile(path, PARAMS, { signal, sparse: options?.sparse })
    }
    const now = (): number => Date.now() + 3_600_000
    const scan = async (cache?: ScanCache): Promise<Map<string, { chunks: PlacedChunk[], cacheEntry?: ScanCacheEntry, cached: boolean }>> => {
      const out = new Map<string, { chunks: PlacedChunk[], cacheEntry?: ScanCacheEntry, cached: boolean }>()
      for await (const item of scanTree(src, { chunkFile: chunk, cache, now })) if (item.file !== undefined) out.set(item.entry.path, item.file)
      return out
    }
    const first = await scan()
    expect(asked).toEqual({ 'sparse.img': true, 'zeros.bin': false })
    expect(holes(first.get('sparse.img')!.chunks)).toBeGreaterThan(0)
    expect(first.get('sparse.img')!.cacheEntry?.sparse).toBe(true)
    expect(holes(first.get('zeros.bin')!.chunks)).toBe(0)
    expect(first.get('zeros.bin')!.cacheEntry?.sparse).toBeUndefined()

    const entries = new Map([...first].map(([p, f]) => [p, f.cacheEntry as ScanCacheEntry]))
    for (const k of Object.keys(asked)) delete asked[k]
    const second = await scan({ get: async p => entries.get(p) })
    expect(asked).toEqual({})
    expect(second.get('sparse.img')!.cached).toBe(true)
    // a list cut dense (before holes existed) is not reused for a sparse file
    const { sparse: _, ...dense } = entries.get('sparse.img') as ScanCacheEntry
    entries.set('sparse.img', dense)
    const third = await scan({ get: async p => entries.get(p) })
    expect(asked).toEqual({ 'sparse.img': true })
    expect(holes(third.get('sparse.img')!.chunks)).toBeGreaterThan(0)
  })
})

describe('holes in the store', () => {
  let store: Store
  beforeEach(async () => { store = await openStore(join(dir, 'db')) })
  afterEach(async () => { await store.close() })

  it('the scan cache round-trips hole ids and the sparse flag', async () => {
    const data = pseudoRandom(1000, 7)
    const entry: ScanCacheEntry = {
      size: 3000, mtimeMs: 1_700_000_000_000.5, ctimeMs: 1_700_000_000_001, ino: 42, sparse: true,
      chunks: [{ id: chunkIdOf(data), offset: 0, size: 1000 }, { id: Buffer.from(HOLE_CHUNK_ID), offset: 1000, size: 2000 }],
    }
    await store.catalog.putScanEntries('/src', [['a.img', entry], ['b.bin', { ...entry, sparse: undefined }]])
    const [a, b] = await store.catalog.getScanEntries('/src', ['a.img', 'b.bin'])
    const plain = (e: ScanCacheEntry): unknown => ({ ...e, chunks: e.chunks.map(c => ({ ...c, id: toHex(c.id) })) })
    expect(plain(a!)).toEqual(plain(entry))
    expect(isHoleChunk(a!.chunks[1]!.id)).toBe(true)
    expect(b!.sparse).toBeUndefined()
    expect(isHoleChunk(b!.chunks[1]!.id)).toBe(true)
  })

  it('the chunk index never records a location for a hole', async () => {
    const root = await store.index.addRoot({ kind: 'source', path: join(dir, 'src'), tree: 't/x' })
    const a = pseudoRandom(1000, 8)
    const b = pseudoRandom(1000, 9)
    const hole = { id: Buffer.from(HOLE_CHUNK_ID), offset: 1000, size: 5000 }
    const chunks = [{ id: chunkIdOf(a), offset: 0, size: 1000 }, hole, { id: chunkIdOf(b), offset: 6000, size: 1000 }]
    await store.index.indexFile(root.id, 'f.img', chunks)
    await store.index.indexNewFiles(root.id, [{ relPath: 'g.img', chunks }])
    await store.index.addLocations(HOLE_CHUNK_ID, [{ rootId: root.id, relPath: 'h.img', offset: 0, size: 4096 }])
    expect(await store.index.locations(HOLE_CHUNK_ID)).toEqual([])
    expect(await store.index.has(HOLE_CHUNK_ID)).toBe(false)
    expect(await store.index.hasMany([chunkIdOf(a), HOLE_CHUNK_ID, chunkIdOf(b)])).toEqual([true, false, true])
    expect(await store.index.readChunk(HOLE_CHUNK_ID)).toBeUndefined()
    // a file is intact when its data chunks are recorded: its holes never are
    expect(await store.index.hasFiles(root.id, [{ relPath: 'f.img', chunks }, { relPath: 'g.img', chunks }])).toEqual([true, true])
    expect((await store.index.locations(chunkIdOf(b))).map(l => l.relPath).sort()).toEqual(['f.img', 'g.img'])
  })

  it('a scheduler never needs a hole', () => {
    const s = new SwarmScheduler({ selfId: 'A', windowBytes: 1e6, ownerGraceMs: 1000, ownerStallMs: 500 })
    s.setNeeded([{ id: HOLE_CHUNK_ID, size: 65536 }, { id: chunkIdOf(Uint8Array.of(1)), size: 1 }])
    expect(s.remaining).toBe(1)
    expect(s.isNeeded(toHex(HOLE_CHUNK_ID))).toBe(false)
  })
})

describe('materializing a sparse file', () => {
  const TREE = 'lab/sparse'
  const SIZE = 16 * MiB
  let store: Store
  let home: HomeLayout
  let src: string
  const publisherKey = generateKeyPairSync('ed25519').privateKey

  beforeEach(async () => {
    store = await openStore(join(dir, 'db'))
    home = new HomeLayout(join(dir, 'home'))
    await mkdir(home.root, { recursive: true })
    src = join(dir, 'src')
    await mkdir(src)
  })
  afterEach(async () => { await store.close() })

  const publish = async (): Promise<{ seq: number, init: MaterializeInit, rootId: number }> => {
    const result = await publishVersion({
      tree: TREE, source: src, index: store.index, catalog: store.catalog, publisherKey, chunking: DEFAULT_CHUNKING, log: silentLogger(),
      chunkFile: async (path, signal, _size, options) => await chunkFile(path, DEFAULT_CHUNKING, { signal, sparse: options?.sparse }),
      now: () => Date.now() + 3_600_000,
    })
    const root = await loadRoot(store.catalog, result.envelope.rootHash)
    const seq = result.envelope.seq
    const record = await store.catalog.getVersion(TREE, seq)
    return { seq, rootId: record!.rootId!, init: { tree: TREE, seq, envelope: result.envelope.bytes, entries: () => readManifestEntries(store.catalog, root) } }
  }

  /** The version a subscriber holds: stored as complete with its directory, for verify and as a previous version. */
  const expectFaithful = async (seq: number, path: string): Promise<void> => {
    const built = join(home.versionDir(TREE, seq), 'disk.img')
    expect(sha(await readFile(built))).toBe(sha(await readFile(path)))
    const st = await stat(built)
    expect(st.size).toBe(SIZE)
    // not even the zeros beside the data inside its chunks take blocks: as many as the source's
    expect(st.blocks).toBeLessThanOrEqual((await stat(path)).blocks)
    expect((await verifyVersion(store.catalog, TREE, seq)).problems).toEqual([])
  }

  it('plans only data chunks, sizes the file with ftruncate and leaves its holes unwritten; a version with data in a hole rebuilds from local chunks', async () => {
    const img = join(src, 'disk.img')
    await sparseFile(img, SIZE, [[0, pseudoRandom(20_000, 10)], [SIZE / 2, pseudoRandom(30_000, 11)], [SIZE - 10_000, pseudoRandom(10_000, 12)]])
    await sparseFile(join(src, 'empty.img'), 3 * MiB, [])
    const v1 = await publish()
    // nothing local: every data chunk is planned, no hole is
    await store.index.removeRoot(v1.rootId)
    const m = new Materializer({ index: store.index, catalog: store.catalog, home }, v1.init)
    const plan = await m.prepare()
    expect(plan.some(c => isHoleChunk(c.id))).toBe(false)
    expect(plan.reduce((n, c) => n + c.size, 0)).toBeLessThan(2 * MiB)
    const fh = await open(img, 'r')
    try {
      for (const c of plan) {
        const bytes = Buffer.alloc(c.size)
        await fh.read(bytes, 0, c.size, c.placements[0]!.offset)
        expect(await m.fill(c.id, bytes)).toBe(true)
      }
    } finally { await fh.close() }
    await m.finalize()
    await expectFaithful(v1.seq, img)
    // a file of holes only needed no chunk at all
    const empty = await stat(join(home.versionDir(TREE, v1.seq), 'empty.img'))
    expect([empty.size, empty.blocks]).toEqual([3 * MiB, 0])
    expect(await store.index.has(HOLE_CHUNK_ID)).toBe(false)

    // v2: data written into a hole; the rest comes from v1's chunks, the unchanged file is linked from v1
    const w = await open(img, 'r+')
    await w.write(pseudoRandom(40_000, 13), 0, 40_000, 5 * MiB)
    await w.close()
    const v2 = await publish()
    const v1Root = await loadRoot(store.catalog, openEnvelope((await store.catalog.getVersion(TREE, v1.seq))!.envelope).rootHash)
    const m2 = new Materializer({ index: store.index, catalog: store.catalog, home }, { ...v2.init, previous: { dir: home.versionDir(TREE, v1.seq), entries: () => readManifestEntries(store.catalog, v1Root) } })
    expect(await m2.prepare()).toEqual([])
    expect(m2.stats.linkedFiles).toBe(1)
    expect(m2.stats.localChunks).toBeGreaterThan(0)
    await m2.finalize()
    await expectFaithful(v2.seq, img)
  })
})
