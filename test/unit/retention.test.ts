import { generateKeyPairSync } from 'node:crypto'
import { chmod, lstat, readFile, readlink, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { chunkIdOf, toHex, type ChunkId } from '../../protocol/chunk-id.js'
import { openEnvelope, rawPublicKeyOf, signEnvelope } from '../../protocol/envelope.js'
import { ManifestWriter, type ChunkingParams, type ManifestEntry } from '../../protocol/manifest.js'
import { scanTree } from '../../agent/scan/scanner.js'
import type { PlacedChunk } from '../../agent/store/types.js'
import { verifyVersion } from '../../agent/versions/verify.js'
import { materializeLocal, type MaterializeInit } from '../../agent/versions/materializer.js'
import { loadRoot, readManifestEntries, storeManifest } from '../../agent/store/manifest-io.js'
import { applyRetention } from '../../agent/versions/retention.js'
import { compileFilter } from '../../agent/versions/filter.js'
import { deltaKeyOf } from '../../protocol/delta.js'
import { put as putFile } from '../helpers/fs.js'
import { cutFixed } from '../helpers/bytes.js'
import { storeWorlds, type SourceWorld } from '../helpers/world.js'

const BLOCK = 4096
const CHUNKING: ChunkingParams = { algorithm: 'rabin', avgBits: 12, minSize: 64, maxSize: BLOCK }
const TREE = 'mirror/epel'
const T0 = 1_700_000_000_000
const keys = generateKeyPairSync('ed25519')

const cut = (bytes: Uint8Array): PlacedChunk[] => cutFixed(bytes, BLOCK)

type World = SourceWorld
const worlds = storeWorlds('deltamesh-ret-')

async function put (path: string, bytes: string, mode = 0o644): Promise<void> {
  await putFile(path, bytes, mode, T0)
}

async function makeWorld (): Promise<World> {
  return await worlds.withSource(TREE, async src => {
    // 20 identical small files first: the first manifest chunk is the same in every version (a shared blob)
    for (let i = 0; i < 20; i++) await put(join(src, `a${String(i).padStart(2, '0')}`), 'same in every version\n')
    await put(join(src, 'ro', 'r.txt'), 'read only\n', 0o444)
    await chmod(join(src, 'ro'), 0o555)
  })
}

/** Publishes the source as version `seq` (v.txt differs per version) and materializes it over the current one. */
async function buildVersion (w: World, seq: number): Promise<void> {
  await put(join(w.src, 'v.txt'), `version ${seq}\n`)
  const writer = new ManifestWriter({ chunking: CHUNKING })
  const parts: Uint8Array[] = [writer.start()]
  for await (const item of scanTree(w.src, { chunkFile: async path => cut(await readFile(path)) })) {
    parts.push(writer.write(item.entry))
    if (item.file !== undefined) await w.store.index.indexFile(w.sourceRoot.id, item.entry.path, item.file.chunks)
  }
  const manifest = Buffer.concat(parts)
  const pieces: Uint8Array[] = []
  for (let o = 0; o < manifest.byteLength; o += 1000) pieces.push(manifest.subarray(o, o + 1000))
  const stored = await storeManifest(w.store.catalog, pieces)
  const envelope = signEnvelope({ tree: TREE, seq, label: '', createdAtMs: T0, rootHash: stored.rootHash, rootSize: stored.rootBytes.byteLength, publisherKey: rawPublicKeyOf(keys.privateKey) }, keys.privateKey).bytes
  const init: MaterializeInit = { tree: TREE, seq, envelope, entries: () => readManifestEntries(w.store.catalog, stored.root) }
  const current = (await w.store.catalog.getTree(TREE))?.currentSeq
  if (current !== undefined) {
    const prev = await w.store.catalog.getVersion(TREE, current)
    const prevRoot = await loadRoot(w.store.catalog, openEnvelope(prev!.envelope).rootHash)
    init.previous = { dir: prev!.path!, entries: () => readManifestEntries(w.store.catalog, prevRoot) }
  }
  await materializeLocal({ index: w.store.index, catalog: w.store.catalog, home: w.home }, init)
}

async function blobsOf (w: World, seq: number): Promise<ChunkId[]> {
  const record = await w.store.catalog.getVersion(TREE, seq)
  const rootHash = openEnvelope(record!.envelope).rootHash
  const root = await loadRoot(w.store.catalog, rootHash)
  return [rootHash, ...root.chunks.map(c => c.id)]
}

const exists = async (path: string): Promise<boolean> => await lstat(path).then(() => true, () => false)

/** The chunk ids of one file in version `seq`, from its stored manifest. */
async function fileChunks (w: World, seq: number, path: string): Promise<ChunkId[]> {
  const record = await w.store.catalog.getVersion(TREE, seq)
  const root = await loadRoot(w.store.catalog, openEnvelope(record!.envelope).rootHash)
  for await (const e of readManifestEntries(w.store.catalog, root)) if (e.type === 'file' && e.path === path) return e.chunks.map(c => c.id)
  throw new Error(`${path} not in version ${seq}`)
}

describe('applyRetention', () => {
  it('deletes the stored deltas that start from a pruned version, keeps those between kept versions', async () => {
    const w = await makeWorld()
    for (let seq = 1; seq <= 5; seq++) await buildVersion(w, seq)
    // v.txt changes in every version: the deltas a publisher (or a subscriber that applied them) stores
    const key = new Map<number, Uint8Array>()
    for (let seq = 1; seq < 5; seq++) {
      key.set(seq, deltaKeyOf(await fileChunks(w, seq, 'v.txt'), await fileChunks(w, seq + 1, 'v.txt')))
      await w.store.catalog.putDelta(key.get(seq)!, Buffer.from(`delta ${seq} → ${seq + 1}`))
    }
    const result = await applyRetention({ index: w.store.index, catalog: w.store.catalog, home: w.home }, TREE)
    expect(result.removedVersions).toEqual([1, 2])
    expect(result.deletedDeltas).toBe(2)
    expect(await w.store.catalog.getDelta(key.get(1)!)).toBeUndefined()
    expect(await w.store.catalog.getDelta(key.get(2)!)).toBeUndefined()
    expect(Buffer.from((await w.store.catalog.getDelta(key.get(3)!))!).toString()).toBe('delta 3 → 4')
    expect(Buffer.from((await w.store.catalog.getDelta(key.get(4)!))!).toString()).toBe('delta 4 → 5')
  })

  it('keeps the last 3 complete versions; frees older dirs, index roots, records and unshared manifest blobs', async () => {
    const w = await makeWorld()
    const blobs = new Map<number, ChunkId[]>()
    const rootIds = new Map<number, number>()
    for (let seq = 1; seq <= 5; seq++) {
      await buildVersion(w, seq)
      blobs.set(seq, await blobsOf(w, seq))
      rootIds.set(seq, (await w.store.catalog.getVersion(TREE, seq))!.rootId!)
    }
    const sharedFirstChunk = blobs.get(1)![1]!
    expect(toHex(blobs.get(5)![1]!)).toBe(toHex(sharedFirstChunk))
    const v3 = w.home.versionDir(TREE, 3)
    const inode = (await stat(join(v3, 'a00'))).ino

    const result = await applyRetention({ index: w.store.index, catalog: w.store.catalog, home: w.home }, TREE)
    expect(result.removedVersions).toEqual([1, 2])
    expect((await w.store.catalog.listVersions(TREE)).map(v => v.seq)).toEqual([3, 4, 5])
    for (const seq of [1, 2]) {
      expect(await exists(w.home.versionDir(TREE, seq))).toBe(false) // including its read-only ro/ directory
      expect(await w.store.index.getRoot(rootIds.get(seq)!)).toBeUndefined()
      for (const id of blobs.get(seq)!) {
        if (toHex(id) === toHex(sharedFirstChunk)) continue
        expect(await w.store.catalog.hasBlob(id)).toBe(false)
      }
    }
    expect(await w.store.catalog.hasBlob(sharedFirstChunk)).toBe(true)
    for (const seq of [3, 4, 5]) {
      for (const id of blobs.get(seq)!) expect(await w.store.catalog.hasBlob(id)).toBe(true)
      expect((await verifyVersion(w.store.catalog, TREE, seq)).problems).toEqual([])
    }
    // the chunk of "version 1\n" lay only in v1: nothing points at a deleted file
    expect(await w.store.index.has(chunkIdOf(Buffer.from('version 1\n')))).toBe(false)
    expect(await w.store.index.has(chunkIdOf(Buffer.from('version 3\n')))).toBe(true)
    // hardlinks shared with the pruned versions are intact
    expect((await stat(join(v3, 'a00'))).ino).toBe(inode)
    expect(await readFile(join(v3, 'a00'), 'utf8')).toBe('same in every version\n')
    expect(await readlink(w.home.currentLink(TREE))).toBe('versions/5')

    // idempotent
    expect(await applyRetention({ index: w.store.index, catalog: w.store.catalog, home: w.home }, TREE)).toEqual({ removedVersions: [], removedStaging: [], deletedBlobs: 0, deletedDeltas: 0, removedRecords: [] })
  })

  it('TreeRecord.retain is honoured and the current version is never removed', async () => {
    const w = await makeWorld()
    for (let seq = 1; seq <= 4; seq++) await buildVersion(w, seq)
    const tree = await w.store.catalog.getTree(TREE)
    // current points at 2 (an operator pinned it); retain 1 keeps the newest (4) and the current (2)
    await w.store.catalog.putTree({ ...tree!, retain: 1, currentSeq: 2 })
    const result = await applyRetention({ index: w.store.index, catalog: w.store.catalog, home: w.home }, TREE)
    expect(result.removedVersions).toEqual([1, 3])
    expect((await w.store.catalog.listVersions(TREE)).map(v => v.seq)).toEqual([2, 4])
    expect(await exists(w.home.versionDir(TREE, 2))).toBe(true)
    expect(await exists(w.home.versionDir(TREE, 4))).toBe(true)
  })

  it('removes abandoned staging of older seqs (and their index roots), keeps newer staging', async () => {
    const w = await makeWorld()
    for (let seq = 1; seq <= 3; seq++) await buildVersion(w, seq)
    const old = w.home.stagingDir(TREE, 2)
    const newer = w.home.stagingDir(TREE, 7)
    await put(join(old, 'partial.bin'), 'half')
    await put(join(newer, 'partial.bin'), 'half')
    const oldRoot = await w.store.index.addRoot({ kind: 'staging', path: old, tree: TREE, seq: 2 })
    await w.store.index.indexFile(oldRoot.id, 'partial.bin', cut(Buffer.from('half')))
    await w.store.catalog.putVersion({ tree: TREE, seq: 7, envelope: (await w.store.catalog.getVersion(TREE, 3))!.envelope, state: 'syncing' })

    const result = await applyRetention({ index: w.store.index, catalog: w.store.catalog, home: w.home }, TREE)
    expect(result.removedStaging).toEqual([2])
    expect(await exists(old)).toBe(false)
    expect(await exists(newer)).toBe(true)
    expect(await w.store.index.getRoot(oldRoot.id)).toBeUndefined()
    expect(await w.store.index.has(chunkIdOf(Buffer.from('half')))).toBe(false)
    expect((await w.store.catalog.getVersion(TREE, 7))?.state).toBe('syncing')
  })

  it('forgets the records of versions below the current one that never completed (skipped, failed), keeps newer ones', async () => {
    const w = await makeWorld()
    for (let seq = 1; seq <= 5; seq++) await buildVersion(w, seq)
    const envelope = (await w.store.catalog.getVersion(TREE, 5))!.envelope
    // seq 5 is current; 2 and 4 never completed here (a newer version took over), 6 is being synced
    await w.store.catalog.putVersion({ ...(await w.store.catalog.getVersion(TREE, 2))!, state: 'failed', error: 'superseded' })
    await w.store.catalog.putVersion({ ...(await w.store.catalog.getVersion(TREE, 4))!, state: 'announced' })
    await w.store.catalog.putVersion({ tree: TREE, seq: 6, envelope, state: 'syncing' })
    const result = await applyRetention({ index: w.store.index, catalog: w.store.catalog, home: w.home }, TREE)
    expect(result.removedRecords.sort()).toEqual([2, 4])
    expect(await w.store.catalog.getVersion(TREE, 2)).toBeUndefined()
    expect(await w.store.catalog.getVersion(TREE, 4)).toBeUndefined()
    expect((await w.store.catalog.getVersion(TREE, 6))?.state).toBe('syncing')
    expect((await w.store.catalog.getVersion(TREE, 5))?.state).toBe('complete')
  })

  it('a version rebuilt for a changed filter (generation 1) replaces its directory; the earlier one is removed, a later one kept', async () => {
    const w = await makeWorld()
    for (let seq = 1; seq <= 2; seq++) await buildVersion(w, seq)
    const v2 = (await w.store.catalog.getVersion(TREE, 2))!
    const root = await loadRoot(w.store.catalog, openEnvelope(v2.envelope).rootHash)
    const entries = (): AsyncIterable<ManifestEntry> => readManifestEntries(w.store.catalog, root)
    const selection = { include: ['a0*', 'v.txt'] }
    await materializeLocal({ index: w.store.index, catalog: w.store.catalog, home: w.home }, {
      tree: TREE, seq: 2, entries, filter: compileFilter(selection), selection, generation: 1, previous: { dir: v2.path!, entries },
    })
    const rebuilt = w.home.versionDir(TREE, 2, 1)
    expect(rebuilt).toMatch(/versions\/2\.1$/)
    expect(await readlink(w.home.currentLink(TREE))).toBe('versions/2.1')
    const record = (await w.store.catalog.getVersion(TREE, 2))!
    expect(record).toMatchObject({ state: 'complete', generation: 1, path: rebuilt, selection, stats: { files: 11 } })
    // unchanged files are the same inodes, the rest is gone from the new directory
    expect((await stat(join(rebuilt, 'a00'))).ino).toBe((await stat(join(v2.path!, 'a00'))).ino)
    expect(await exists(join(rebuilt, 'a10'))).toBe(false)
    expect(await exists(join(rebuilt, 'ro'))).toBe(false)
    // a later generation in the making (or cut short by a crash after its rename) is not touched
    const later = w.home.versionDir(TREE, 2, 2)
    await put(join(later, 'x'), 'x')

    const result = await applyRetention({ index: w.store.index, catalog: w.store.catalog, home: w.home }, TREE)
    expect(result.removedStaging).toEqual([2])
    expect(await exists(v2.path!)).toBe(false)
    expect(await w.store.index.getRoot(v2.rootId!)).toBeUndefined()
    expect(await exists(rebuilt)).toBe(true)
    expect(await exists(later)).toBe(true)
    expect(await exists(w.home.versionDir(TREE, 1))).toBe(true)
    expect((await verifyVersion(w.store.catalog, TREE, 2)).problems).toEqual([])
    expect(await readFile(join(rebuilt, 'v.txt'), 'utf8')).toBe('version 2\n')
  })

  it("never deletes a publisher's source directory or its index root", async () => {
    const w = await makeWorld()
    await buildVersion(w, 1)
    const envelope = (await w.store.catalog.getVersion(TREE, 1))!.envelope
    // a publisher's versions point at its source (same root for all of them)
    for (const seq of [2, 3, 4, 5]) await w.store.catalog.putVersion({ tree: TREE, seq, envelope, state: 'complete', rootId: w.sourceRoot.id, path: w.src })
    await w.store.catalog.putTree({ name: TREE, currentSeq: 5 })
    const result = await applyRetention({ index: w.store.index, catalog: w.store.catalog, home: w.home }, TREE)
    expect(result.removedVersions).toEqual([1, 2])
    expect(await exists(join(w.src, 'v.txt'))).toBe(true)
    expect(await w.store.index.getRoot(w.sourceRoot.id)).toBeDefined()
    // v1's blobs are the same as the kept records' (same envelope), so they stay
    expect(result.deletedBlobs).toBe(0)
  })
})
