import { generateKeyPairSync, randomBytes } from 'node:crypto'
import { chmod, lstat, mkdir, readFile, readdir, readlink, rm, stat, symlink, unlink, utimes, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { chunkIdOf, toHex } from '../../protocol/chunk-id.js'
import { rawPublicKeyOf, signEnvelope } from '../../protocol/envelope.js'
import { encodeEntry, encodeHeader, encodeRoot, ManifestWriter, type ChunkingParams, type ManifestEntry, type ManifestRoot } from '../../protocol/manifest.js'
import { scanTree } from '../../agent/scan/scanner.js'
import { openStore } from '../../agent/store/index.js'
import type { PlacedChunk } from '../../agent/store/types.js'
import { Materializer, materializeLocal, type MaterializeInit } from '../../agent/versions/materializer.js'
import { readManifestEntries, storeManifest } from '../../agent/store/manifest-io.js'
import { globFilter } from '../../agent/versions/walk.js'
import { wrapError } from '../../agent/versions/install.js'
import { verifyVersion } from '../../agent/versions/verify.js'
import { verifyFileChunks } from '../../agent/chunk/verify.js'
import type { ChunkRef } from '../../protocol/manifest.js'

// Fixed-size cutting keeps the test independent of the chunker and makes "change one block" exact.
const BLOCK = 4096
const CHUNKING: ChunkingParams = { algorithm: 'rabin', avgBits: 12, minSize: 64, maxSize: BLOCK }
const TREE = 'lab/compose'
import { makeWritable, put as putFile, when } from '../helpers/fs.js'
import { cutFixed } from '../helpers/bytes.js'
import { storeWorlds, type SourceWorld } from '../helpers/world.js'

const T0 = 1_700_000_000_123

const cut = (bytes: Uint8Array): PlacedChunk[] => cutFixed(bytes, BLOCK)

interface World extends SourceWorld {
  /** Scans `src` into a signed manifest (indexing the source's files unless told not to). */
  publish: (seq: number, options?: { skipIndex?: (path: string) => boolean }) => Promise<{ root: ManifestRoot, envelope: Uint8Array, entries: () => AsyncIterable<ManifestEntry> }>
  build: (seq: number, extra?: Partial<MaterializeInit>) => Promise<Materializer>
}

const worlds = storeWorlds('deltamesh-mat-')

async function put (path: string, bytes: Uint8Array | string, mode = 0o644, mtimeMs = T0): Promise<void> {
  await putFile(path, bytes, mode, mtimeMs)
}

async function setDirTimes (dir: string, mtimeMs = T0 - 1000): Promise<void> {
  for (const name of await readdir(dir)) {
    const st = await lstat(join(dir, name))
    if (st.isDirectory()) await setDirTimes(join(dir, name), mtimeMs)
  }
  await utimes(dir, when(mtimeMs), when(mtimeMs))
}

const keys = generateKeyPairSync('ed25519')

async function makeWorld (): Promise<World> {
  const base = await worlds.withSource(TREE)
  const { home, src, store, sourceRoot } = base
  const world: World = {
    ...base,
    async publish (seq, options = {}) {
      const writer = new ManifestWriter({ chunking: CHUNKING })
      const parts: Uint8Array[] = [writer.start()]
      const chunkFile = async (path: string): Promise<PlacedChunk[]> => cut(await readFile(path))
      for await (const item of scanTree(src, { chunkFile })) {
        parts.push(writer.write(item.entry))
        if (item.file !== undefined && options.skipIndex?.(item.entry.path) !== true) await store.index.indexFile(sourceRoot.id, item.entry.path, item.file.chunks)
      }
      const manifest = Buffer.concat(parts)
      const pieces: Uint8Array[] = []
      for (let o = 0; o < manifest.byteLength; o += 1000) pieces.push(manifest.subarray(o, o + 1000))
      const stored = await storeManifest(store.catalog, pieces)
      const envelope = signEnvelope({ tree: TREE, seq, label: `v${seq}`, createdAtMs: T0, rootHash: stored.rootHash, rootSize: stored.rootBytes.byteLength, publisherKey: rawPublicKeyOf(keys.privateKey) }, keys.privateKey).bytes
      return { root: stored.root, envelope, entries: () => readManifestEntries(store.catalog, stored.root) }
    },
    async build (seq, extra = {}) {
      const published = await world.publish(seq)
      const tree = await store.catalog.getTree(TREE)
      const prevSeq = tree?.currentSeq
      const init: MaterializeInit = { tree: TREE, seq, entries: published.entries, envelope: published.envelope, ...extra }
      if (prevSeq !== undefined && extra.previous === undefined) init.previous = await previousOf(world, prevSeq)
      const m = new Materializer({ index: store.index, catalog: store.catalog, home }, init)
      return m
    },
  }
  return world
}

async function previousOf (world: World, seq: number): Promise<MaterializeInit['previous']> {
  const record = await world.store.catalog.getVersion(TREE, seq)
  const { openEnvelope } = await import('../../protocol/envelope.js')
  const { loadRoot } = await import('../../agent/store/manifest-io.js')
  const root = await loadRoot(world.store.catalog, openEnvelope(record!.envelope).rootHash)
  return { dir: record!.path!, entries: () => readManifestEntries(world.store.catalog, root) }
}

/** A source tree with the shapes that matter: nested and read-only dirs, modes, a symlink, empty and multi-chunk files. */
async function fillSource (src: string): Promise<{ big: Buffer }> {
  const big = randomBytes(BLOCK * 10 + 123)
  await put(join(src, 'a.txt'), 'hello\n')
  await put(join(src, 'big.bin'), big, 0o640, T0 + 7)
  await put(join(src, 'empty'), '', 0o600)
  await put(join(src, 'sub', 'x.sh'), '#!/bin/sh\necho hi\n', 0o755)
  await put(join(src, 'sub', 'deeper', 'y.txt'), randomBytes(5000), 0o644, T0 - 99_000)
  await symlink('../a.txt', join(src, 'sub', 'link'))
  await put(join(src, 'ro', 'r.txt'), 'read only\n', 0o444)
  await setDirTimes(src)
  await chmod(join(src, 'sub'), 0o750)
  await chmod(join(src, 'ro'), 0o555)
  return { big }
}

/** Every entry of `a` is in `b` with the same type, content, mode and mtime (files and dirs), or target (links). */
async function expectSameTree (a: string, b: string, rel = ''): Promise<void> {
  const names = (await readdir(join(a, rel))).sort()
  expect((await readdir(join(b, rel))).sort()).toEqual(names)
  for (const name of names) {
    const path = rel === '' ? name : `${rel}/${name}`
    const sa = await lstat(join(a, path))
    const sb = await lstat(join(b, path))
    if (sa.isSymbolicLink()) {
      expect(sb.isSymbolicLink(), path).toBe(true)
      expect(await readlink(join(b, path))).toBe(await readlink(join(a, path)))
      continue
    }
    expect(sb.mode & 0o7777, path).toBe(sa.mode & 0o7777)
    expect(Math.floor(sb.mtimeMs), path).toBe(Math.floor(sa.mtimeMs))
    if (sa.isDirectory()) {
      expect(sb.isDirectory(), path).toBe(true)
      await expectSameTree(a, b, path)
    } else {
      expect(Buffer.compare(await readFile(join(b, path)), await readFile(join(a, path))), path).toBe(0)
    }
  }
}

async function allPaths (dir: string): Promise<string[]> {
  const out: string[] = []
  for (const name of await readdir(dir)) {
    out.push(join(dir, name))
    const st = await lstat(join(dir, name))
    if (st.isDirectory()) out.push(...await allPaths(join(dir, name)))
  }
  return out
}

describe('Materializer', () => {
  it('builds v1 from an indexed source: contents, modes, mtimes, symlinks, current link, catalog, index', async () => {
    const w = await makeWorld()
    await fillSource(w.src)
    const m = await w.build(1)
    expect(await m.prepare()).toEqual([])
    expect(m.stats.localChunks).toBeGreaterThan(10)
    const record = await m.finalize()

    const v1 = w.home.versionDir(TREE, 1)
    await expectSameTree(w.src, v1)
    expect(await readlink(w.home.currentLink(TREE))).toBe('versions/1')
    expect(await readFile(join(w.home.currentLink(TREE), 'a.txt'), 'utf8')).toBe('hello\n')
    await expect(lstat(w.home.stagingDir(TREE, 1))).rejects.toThrow()
    expect(record).toMatchObject({ tree: TREE, seq: 1, state: 'complete', path: v1 })
    expect(record.stats).toMatchObject({ files: 6, newChunks: 0, newBytes: 0 })
    expect((await w.store.catalog.getTree(TREE))?.currentSeq).toBe(1)
    const root = await w.store.index.getRoot(record.rootId!)
    expect(root).toMatchObject({ kind: 'version', path: v1, tree: TREE, seq: 1 })
    expect((await verifyVersion(w.store.catalog, TREE, 1)).problems).toEqual([])

    // the version serves chunks on its own once the source is gone
    const big = await readFile(join(w.src, 'big.bin'))
    await w.store.index.removeRoot(w.sourceRoot.id)
    const id = chunkIdOf(big.subarray(BLOCK, 2 * BLOCK))
    expect(Buffer.from((await w.store.index.readChunk(id))!).equals(big.subarray(BLOCK, 2 * BLOCK))).toBe(true)
  })

  it('v2 hardlinks unchanged files and assembles changed ones from chunks of v1 and of the source', async () => {
    const w = await makeWorld()
    const { big } = await fillSource(w.src)
    await materializeLocal({ index: w.store.index, catalog: w.store.catalog, home: w.home }, await buildInit(w, 1))
    const v1 = w.home.versionDir(TREE, 1)

    // big.bin: block 3 changes (the new block lies only in the source); copy.bin: the OLD big.bin, whose block 3 lies only in v1
    const changed = Buffer.from(big)
    randomBytes(BLOCK).copy(changed, 3 * BLOCK)
    await put(join(w.src, 'big.bin'), changed, 0o640, T0 + 8)
    await put(join(w.src, 'copy.bin'), big, 0o600)
    await setDirTimes(w.src)
    const m = await w.build(2)
    await w.store.index.removeFile(w.sourceRoot.id, 'copy.bin')
    await unlink(join(w.src, 'copy.bin'))
    expect(await w.store.index.has(chunkIdOf(big.subarray(3 * BLOCK, 4 * BLOCK)))).toBe(true) // only via v1

    expect(await m.prepare()).toEqual([])
    expect(m.stats.linkedFiles).toBe(5)
    await m.finalize()
    const v2 = w.home.versionDir(TREE, 2)
    for (const path of ['a.txt', 'empty', 'sub/x.sh', 'sub/deeper/y.txt', 'ro/r.txt']) {
      expect((await stat(join(v2, path))).ino, path).toBe((await stat(join(v1, path))).ino)
    }
    expect((await stat(join(v2, 'big.bin'))).ino).not.toBe((await stat(join(v1, 'big.bin'))).ino)
    expect((await readFile(join(v2, 'big.bin'))).equals(changed)).toBe(true)
    expect((await readFile(join(v2, 'copy.bin'))).equals(big)).toBe(true)
    expect((await readFile(join(v1, 'big.bin'))).equals(big)).toBe(true)
    expect(await readlink(w.home.currentLink(TREE))).toBe('versions/2')
    expect((await verifyVersion(w.store.catalog, TREE, 2)).problems).toEqual([])
    expect((await verifyVersion(w.store.catalog, TREE, 1)).problems).toEqual([])
  })

  it('plans chunks nobody here has; fill() verifies, writes every placement, is servable at once; finalize needs an empty plan', async () => {
    const w = await makeWorld()
    const block = randomBytes(BLOCK)
    const remote = Buffer.concat([block, randomBytes(BLOCK), block, Buffer.from('tail')]) // block appears twice
    await put(join(w.src, 'local.txt'), 'local\n')
    await put(join(w.src, 'remote.bin'), remote, 0o644, T0 + 1)
    await setDirTimes(w.src)
    const published = await w.publish(1, { skipIndex: path => path === 'remote.bin' })
    const progress: number[] = []
    const m = new Materializer({ index: w.store.index, catalog: w.store.catalog, home: w.home }, {
      tree: TREE, seq: 1, entries: published.entries, envelope: published.envelope, onProgress: p => progress.push(p.doneBytes),
    })
    const plan = await m.prepare()
    expect(plan).toHaveLength(3)
    const dup = plan.find(c => toHex(c.id) === toHex(chunkIdOf(block)))!
    expect(dup.placements).toEqual([{ relPath: 'remote.bin', offset: 0 }, { relPath: 'remote.bin', offset: 2 * BLOCK }])
    expect(m.progress).toMatchObject({ plannedChunks: 3, plannedBytes: remote.byteLength - BLOCK, doneChunks: 0 })

    await expect(m.finalize()).rejects.toHaveProperty('name', 'MissingChunksError')
    const wrong = Buffer.from(block)
    wrong.writeUInt8(wrong.readUInt8(0) ^ 1, 0)
    await expect(m.fill(dup.id, wrong)).rejects.toHaveProperty('name', 'ChunkHashMismatchError')
    expect(await w.store.index.has(dup.id)).toBe(false)

    expect(await m.fill(dup.id, block)).toBe(true)
    expect(await m.fill(dup.id, block)).toBe(false) // already done
    // servable before the version is complete: the index points into the staging file
    expect((await w.store.index.locations(dup.id)).map(l => l.offset).sort()).toEqual([0, 2 * BLOCK])
    expect(Buffer.from((await w.store.index.readChunk(dup.id))!).equals(block)).toBe(true)

    const rest = m.missing()
    await Promise.all(rest.map(async c => {
      const p = c.placements[0]!
      await m.fill(c.id, remote.subarray(p.offset, p.offset + c.size))
    }))
    expect(m.missing()).toEqual([])
    expect(progress.at(-1)).toBe(remote.byteLength - BLOCK)
    const record = await m.finalize()
    expect(record.stats).toMatchObject({ newChunks: 3, newBytes: remote.byteLength - BLOCK, files: 2 })
    expect((await readFile(join(w.home.versionDir(TREE, 1), 'remote.bin'))).equals(remote)).toBe(true)
    expect((await verifyVersion(w.store.catalog, TREE, 1)).problems).toEqual([])
  })

  it('a large file rebuilt from local chunks read ahead, with missing and repeated chunks among them, plans exactly the missing ones', async () => {
    const w = await makeWorld()
    const blocks = Array.from({ length: 60 }, () => randomBytes(BLOCK))
    await put(join(w.src, 'image.bin'), Buffer.concat(blocks), 0o644, T0)
    await setDirTimes(w.src)
    await materializeLocal({ index: w.store.index, catalog: w.store.catalog, home: w.home }, await buildInit(w, 1))

    // v2: four blocks new (nobody here has them: the source file is not indexed), one new block twice, an old one twice
    const next: Buffer[] = [...blocks]
    for (const i of [5, 20, 21, 40]) next[i] = randomBytes(BLOCK)
    next[55] = next[20]!
    next[50] = blocks[2]!
    const image = Buffer.concat(next)
    await put(join(w.src, 'image.bin'), image, 0o644, T0 + 1)
    await setDirTimes(w.src)
    await w.store.index.removeFile(w.sourceRoot.id, 'image.bin')
    const published = await w.publish(2, { skipIndex: path => path === 'image.bin' })
    const m = new Materializer({ index: w.store.index, catalog: w.store.catalog, home: w.home }, {
      tree: TREE, seq: 2, entries: published.entries, envelope: published.envelope, previous: await previousOf(w, 1),
    })
    const plan = await m.prepare()
    expect(plan.map(c => c.placements.map(p => p.offset / BLOCK))).toEqual(expect.arrayContaining([[5], [20, 55], [21], [40]]))
    expect(plan).toHaveLength(4)
    expect(m.stats.localChunks).toBe(60 - 5)
    for (const c of plan) {
      const at = (c.placements[0] as { offset: number }).offset
      expect(await m.fill(c.id, image.subarray(at, at + c.size))).toBe(true)
    }
    await m.finalize()
    expect((await readFile(join(w.home.versionDir(TREE, 2), 'image.bin'))).equals(image)).toBe(true)
    expect((await readFile(join(w.home.versionDir(TREE, 1), 'image.bin'))).equals(Buffer.concat(blocks))).toBe(true)
  })

  it('a file made only of fetched chunks is created by the fill() that brings one, and finished (mode, mtime) by its last', async () => {
    const w = await makeWorld()
    const two = randomBytes(2 * BLOCK)
    await put(join(w.src, 'two.bin'), two, 0o444, T0 + 7)
    await setDirTimes(w.src)
    const published = await w.publish(1, { skipIndex: () => true })
    const m = new Materializer({ index: w.store.index, catalog: w.store.catalog, home: w.home }, { tree: TREE, seq: 1, entries: published.entries, envelope: published.envelope })
    const plan = await m.prepare()
    expect(plan).toHaveLength(2)
    const staged = join(w.home.stagingDir(TREE, 1), 'two.bin')
    await expect(lstat(staged)).rejects.toHaveProperty('code', 'ENOENT') // nothing to write yet: not created
    const [first, second] = [...plan].sort((a, b) => a.placements[0]!.offset - b.placements[0]!.offset)
    expect(await m.fill(second!.id, two.subarray(BLOCK))).toBe(true)
    expect((await lstat(staged)).mode & 0o7777).toBe(0o600) // private until its last chunk
    expect(await m.fill(first!.id, two.subarray(0, BLOCK))).toBe(true)
    const st = await lstat(staged)
    expect([st.mode & 0o7777, Math.floor(st.mtimeMs), st.size]).toEqual([0o444, T0 + 7, two.byteLength])
    await m.finalize()
    expect((await readFile(join(w.home.versionDir(TREE, 1), 'two.bin'))).equals(two)).toBe(true)
    expect((await verifyVersion(w.store.catalog, TREE, 1)).problems).toEqual([])
  })

  it('many new entries are made durable by one syncfs of staging before the rename; a failing syncfs falls back to fsyncs', async () => {
    for (const failing of [false, true]) {
      const w = await makeWorld()
      for (let i = 0; i < 80; i++) await put(join(w.src, 'd', `f${String(i).padStart(2, '0')}`), `content ${i}`)
      await setDirTimes(w.src)
      const published = await w.publish(1)
      const calls: Array<{ root: string, staged: boolean }> = []
      const syncFs = async (root: string): Promise<void> => {
        calls.push({ root, staged: (await lstat(w.home.versionDir(TREE, 1)).catch(() => undefined)) === undefined })
        if (failing) throw new Error('syncfs unavailable')
      }
      const record = await materializeLocal({ index: w.store.index, catalog: w.store.catalog, home: w.home, syncFs }, { tree: TREE, seq: 1, entries: published.entries, envelope: published.envelope })
      expect(calls).toEqual([{ root: w.home.stagingDir(TREE, 1), staged: true }]) // once, and before the rename
      expect(record.state).toBe('complete')
      await expectSameTree(w.src, w.home.versionDir(TREE, 1))
    }
  })

  for (const copy of [false, true]) {
    it(`a first version takes the seed's files whose bytes match (${copy ? 'copied' : 'hardlinked'}), reuses the unchanged chunks of those that differ, fetches the rest`, async () => {
      const w = await makeWorld()
      const { big } = await fillSource(w.src)
      // nothing indexed: every chunk must come from the seed or be planned for the network
      const published = await w.publish(1, { skipIndex: () => true })
      const seed = join(w.tmp, 'seed')
      await copyTree(w.src, seed)
      await makeWritable(seed)
      await writeFile(join(seed, 'sub', 'x.sh'), '#!/bin/sh\necho HI\n') // same size, other bytes
      await rm(join(seed, 'sub', 'deeper', 'y.txt'))
      await rm(join(seed, 'a.txt'))
      await symlink(join(w.src, 'a.txt'), join(seed, 'a.txt')) // the right bytes behind a symlink: never taken
      const edited = Buffer.from(big)
      edited.fill(7, 3 * BLOCK, 3 * BLOCK + 10) // one block of ten differs
      await writeFile(join(seed, 'big.bin'), edited)
      await utimes(join(seed, 'ro', 'r.txt'), when(T0 + 5000), when(T0 + 5000)) // metadata differs: set from the manifest
      const verifyFile = async (path: string, chunks: readonly ChunkRef[]): Promise<boolean> => await verifyFileChunks(path, chunks)
      const chunkFile = async (path: string): Promise<PlacedChunk[]> => cut(await readFile(path))
      const m = new Materializer({ index: w.store.index, catalog: w.store.catalog, home: w.home, verifyFile, chunkFile }, {
        tree: TREE, seq: 1, entries: published.entries, envelope: published.envelope, seed: { dir: seed, copy, chunking: CHUNKING },
      })
      const plan = await m.prepare()
      expect(m.stats.seededFiles).toBe(1) // ro/r.txt ('empty' needs no seed)
      expect(m.stats.localChunks).toBe(10) // big.bin: all its blocks but the edited one
      expect(plan.flatMap(c => c.placements.map(p => `${p.relPath}@${p.offset}`)).sort()).toEqual([`big.bin@${3 * BLOCK}`, 'a.txt@0', 'sub/deeper/y.txt@0', `sub/deeper/y.txt@${BLOCK}`, 'sub/x.sh@0'].sort())
      for (const c of plan) {
        const first = c.placements[0]!
        const bytes = (await readFile(join(w.src, first.relPath))).subarray(first.offset, first.offset + c.size)
        expect(await m.fill(c.id, bytes)).toBe(true)
      }
      await m.finalize()
      await expectSameTree(w.src, w.home.versionDir(TREE, 1))
      const sameInode = (await stat(join(seed, 'ro', 'r.txt'))).ino === (await stat(join(w.home.versionDir(TREE, 1), 'ro', 'r.txt'))).ino
      expect(sameInode).toBe(!copy)
      expect((await readlink(join(seed, 'a.txt')))).toBe(join(w.src, 'a.txt'))
      expect(await readFile(join(seed, 'sub', 'x.sh'), 'utf8')).toBe('#!/bin/sh\necho HI\n')
      expect((await readFile(join(seed, 'big.bin'))).equals(edited)).toBe(true)
      expect((await verifyVersion(w.store.catalog, TREE, 1)).problems).toEqual([])
    })
  }

  it('a crash mid-materialize leaves v1 current and intact; the next run completes v2 reusing staging work', async () => {
    const w = await makeWorld()
    await fillSource(w.src)
    await materializeLocal({ index: w.store.index, catalog: w.store.catalog, home: w.home }, await buildInit(w, 1))
    const v1Snapshot = join(w.tmp, 'v1-expected')
    await copyTree(w.home.versionDir(TREE, 1), v1Snapshot)

    for (let i = 0; i < 6; i++) await put(join(w.src, 'new', `f${i}.bin`), randomBytes(3 * BLOCK))
    await put(join(w.src, 'big.bin'), randomBytes(BLOCK * 5), 0o640)
    await setDirTimes(w.src)
    const controller = new AbortController()
    let files = 0
    const crashing = await w.build(2, {
      signal: controller.signal,
      // after a few of the new files are complete in staging (unchanged files are only hardlinked)
      afterFile: (path) => { if (path.startsWith('new/') && ++files === 3) controller.abort(new Error('simulated crash')) },
    })
    await expect(crashing.prepare()).rejects.toThrow('simulated crash')
    expect(await readlink(w.home.currentLink(TREE))).toBe('versions/1')
    await expectSameTree(v1Snapshot, join(w.home.treeDir(TREE), 'current'))
    expect((await w.store.catalog.getTree(TREE))?.currentSeq).toBe(1)
    expect((await lstat(w.home.stagingDir(TREE, 2))).isDirectory()).toBe(true)
    await expect(lstat(w.home.versionDir(TREE, 2))).rejects.toThrow()

    const resumed = await w.build(2)
    expect(await resumed.prepare()).toEqual([])
    expect(resumed.stats.resumedChunks).toBeGreaterThan(0)
    await resumed.finalize()
    expect(await readlink(w.home.currentLink(TREE))).toBe('versions/2')
    await expectSameTree(w.src, w.home.versionDir(TREE, 2))
    await expectSameTree(v1Snapshot, w.home.versionDir(TREE, 1))
  })

  it('SIGKILL of a build process at an arbitrary point: v1 stays current and intact; a new process finishes v2', async () => {
    const w = await makeWorld()
    await fillSource(w.src)
    await materializeLocal({ index: w.store.index, catalog: w.store.catalog, home: w.home }, await buildInit(w, 1))
    const v1Snapshot = join(w.tmp, 'v1-expected')
    await copyTree(w.home.versionDir(TREE, 1), v1Snapshot)
    for (let i = 0; i < 40; i++) await put(join(w.src, 'many', `f${String(i).padStart(2, '0')}.bin`), randomBytes(2 * BLOCK + i))
    await setDirTimes(w.src)
    const published = await w.publish(2)
    const v1Record = await w.store.catalog.getVersion(TREE, 1)
    await w.store.close()

    // the build runs in its own process (real kill: no finally blocks, no clean LevelDB close)
    const script = join(w.tmp, 'build-child.mts')
    const repo = process.cwd()
    await writeFile(script, `
      import { openStore } from '${repo}/agent/store/index.js'
      import { HomeLayout } from '${repo}/agent/core/home.js'
      import { Materializer } from '${repo}/agent/versions/materializer.js'
      import { readManifestEntries, loadRoot } from '${repo}/agent/store/manifest-io.js'
      import { openEnvelope } from '${repo}/protocol/envelope.js'
      const [home, tree, envHex, prevEnvHex, prevDir] = process.argv.slice(2)
      const layout = new HomeLayout(home)
      const store = await openStore(layout.db)
      const env = Buffer.from(envHex, 'hex')
      const root = await loadRoot(store.catalog, openEnvelope(env).rootHash)
      const prevRoot = await loadRoot(store.catalog, openEnvelope(Buffer.from(prevEnvHex, 'hex')).rootHash)
      const m = new Materializer({ index: store.index, catalog: store.catalog, home: layout }, {
        tree, seq: 2, envelope: env,
        entries: () => readManifestEntries(store.catalog, root),
        previous: { dir: prevDir, entries: () => readManifestEntries(store.catalog, prevRoot) },
        afterFile: async (path) => { process.stdout.write('file ' + path + '\\n'); await new Promise(r => setTimeout(r, 15)) },
      })
      await m.prepare()
      process.stdout.write('prepared\\n')
      await m.finalize()
      process.stdout.write('done\\n')
      await store.close()
    `)
    const { spawn } = await import('node:child_process')
    const child = spawn(process.execPath, ['--import', 'tsx', script, w.home.root, TREE, Buffer.from(published.envelope).toString('hex'), Buffer.from(v1Record!.envelope).toString('hex'), v1Record!.path!], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stderr.on('data', (d: Buffer) => { err += d.toString() })
    const exited = new Promise<NodeJS.Signals | null>(resolve => child.on('exit', (_code, signal) => resolve(signal)))
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString()
        if ((out.match(/^file many\//gm) ?? []).length >= 12) { child.kill('SIGKILL'); resolve() }
      })
      child.on('exit', () => reject(new Error(`child exited before the kill: ${out}\n${err}`)))
    })
    expect(await exited).toBe('SIGKILL')
    expect(out).not.toContain('prepared')

    w.store = await openStore(w.home.db)
    expect(await readlink(w.home.currentLink(TREE))).toBe('versions/1')
    await expectSameTree(v1Snapshot, join(w.home.treeDir(TREE), 'current'))
    expect((await w.store.catalog.getTree(TREE))?.currentSeq).toBe(1)
    expect((await verifyVersion(w.store.catalog, TREE, 1)).problems).toEqual([])

    const resumed = new Materializer({ index: w.store.index, catalog: w.store.catalog, home: w.home }, {
      tree: TREE, seq: 2, entries: () => readManifestEntries(w.store.catalog, published.root), envelope: published.envelope, previous: await previousOf(w, 1),
    })
    expect(await resumed.prepare()).toEqual([])
    expect(resumed.stats.resumedChunks).toBeGreaterThanOrEqual(10)
    await resumed.finalize()
    expect(await readlink(w.home.currentLink(TREE))).toBe('versions/2')
    await expectSameTree(w.src, w.home.versionDir(TREE, 2))
    expect((await verifyVersion(w.store.catalog, TREE, 2)).problems).toEqual([])
  })

  it('a crash after the rename into place is finished by the next run (install steps are idempotent)', async () => {
    const w = await makeWorld()
    await fillSource(w.src)
    const init = await buildInit(w, 1)
    const m = new Materializer({ index: w.store.index, catalog: w.store.catalog, home: w.home }, init)
    await m.prepare()
    // simulate: everything up to the rename happened, then the process died
    const first = await m.finalize()
    await w.store.index.removeRoot(first.rootId!) // and the index lost the version (worst case)
    await unlink(w.home.currentLink(TREE))
    await w.store.catalog.putTree({ name: TREE })
    await w.store.catalog.deleteVersion(TREE, 1)
    const again = new Materializer({ index: w.store.index, catalog: w.store.catalog, home: w.home }, init)
    expect(await again.prepare()).toEqual([])
    const record = await again.finalize()
    expect(record).toMatchObject({ state: 'complete', stats: { files: 6 } })
    expect(await readlink(w.home.currentLink(TREE))).toBe('versions/1')
    await expectSameTree(w.src, w.home.versionDir(TREE, 1))
    await w.store.index.removeRoot(w.sourceRoot.id)
    const big = await readFile(join(w.src, 'big.bin'))
    expect(Buffer.from((await w.store.index.readChunk(chunkIdOf(big.subarray(0, BLOCK))))!).equals(big.subarray(0, BLOCK))).toBe(true)
  })

  it('include/exclude: filtered-out files are not materialized; parents of selected entries are', async () => {
    const w = await makeWorld()
    await put(join(w.src, 'top.txt'), 'top')
    await put(join(w.src, 'os', 'x86_64', 'a.rpm'), 'x86')
    await put(join(w.src, 'os', 'x86_64', 'debug', 'a-debuginfo.rpm'), 'dbg')
    await put(join(w.src, 'os', 'aarch64', 'a.rpm'), 'arm')
    await setDirTimes(w.src)
    const filter = globFilter(['os/x86_64/**'], ['**/debug/**'])
    const m = await w.build(1, { filter })
    await m.prepare()
    const record = await m.finalize()
    const v1 = w.home.versionDir(TREE, 1)
    expect((await allPaths(v1)).map(p => p.slice(v1.length + 1)).sort()).toEqual(['os', 'os/x86_64', 'os/x86_64/a.rpm'])
    expect(Math.floor((await stat(join(v1, 'os'))).mtimeMs)).toBe(T0 - 1000)
    expect(record.stats?.files).toBe(1)
  })

  it('subscriptions: the subscribed path is flipped to the new version with the same atomic technique', async () => {
    const w = await makeWorld()
    await put(join(w.src, 'a.txt'), 'a')
    await mkdir(join(w.tmp, 'www'))
    const mirror = join(w.tmp, 'www', 'mirror')
    await w.store.catalog.putTree({ name: TREE, subscribedTo: mirror })
    const m = await w.build(1)
    await m.prepare()
    await m.finalize()
    expect(await readlink(mirror)).toBe(w.home.versionDir(TREE, 1))
    expect(await readFile(join(mirror, 'a.txt'), 'utf8')).toBe('a')
    expect((await readdir(join(w.tmp, 'www')))).toEqual(['mirror'])
  })
})

describe('Materializer safety', () => {
  async function hostile (w: World, records: Uint8Array[]): Promise<ManifestRoot> {
    const bytes = Buffer.concat([encodeHeader({ chunking: CHUNKING }), ...records])
    const id = chunkIdOf(bytes)
    await w.store.catalog.putBlob(id, bytes)
    return { manifestSize: bytes.byteLength, entryCount: records.length, totalFileBytes: 0, chunks: [{ id, size: bytes.byteLength }] }
  }
  const emptyFile = (path: string): Uint8Array => encodeEntry({ type: 'file', path, mode: 0o644, mtimeMs: T0, size: 0, chunks: [] })

  async function prepareWith (w: World, entries: () => AsyncIterable<ManifestEntry>): Promise<unknown> {
    const m = new Materializer({ index: w.store.index, catalog: w.store.catalog, home: w.home }, { tree: TREE, seq: 1, entries })
    return await m.prepare().then(() => undefined, (err: unknown) => err)
  }

  it("a '..' path is refused with a typed ManifestError and nothing is written outside staging", async () => {
    const w = await makeWorld()
    const root = await hostile(w, [emptyFile('../evil')])
    const err = await prepareWith(w, () => readManifestEntries(w.store.catalog, root))
    expect(err).toHaveProperty('name', 'ManifestError')
    expect((err as Error).cause).toHaveProperty('name', 'InvalidPathError')
    expect((err as { tree: string }).tree).toBe(TREE)
    expect((await allPaths(w.tmp)).filter(p => p.includes('evil'))).toEqual([])

    // the same entry from a source that skipped the ManifestReader is refused by the materializer itself
    async function * raw (): AsyncGenerator<ManifestEntry> { yield { type: 'file', path: '../evil2', mode: 0o644, mtimeMs: T0, size: 0, chunks: [] } }
    expect(await prepareWith(w, raw)).toHaveProperty('name', 'ManifestError')
    expect((await allPaths(w.tmp)).filter(p => p.includes('evil'))).toEqual([])
  })

  it('a file under a symlink is refused; the link target outside is untouched', async () => {
    const w = await makeWorld()
    const outside = join(w.tmp, 'outside')
    await mkdir(outside)
    const root = await hostile(w, [encodeEntry({ type: 'symlink', path: 'l', mtimeMs: T0, target: outside }), emptyFile('l/pwned')])
    const err = await prepareWith(w, () => readManifestEntries(w.store.catalog, root))
    expect(err).toHaveProperty('name', 'ManifestError')
    expect(await readdir(outside)).toEqual([])

    async function * raw (): AsyncGenerator<ManifestEntry> {
      yield { type: 'symlink', path: 'm', mtimeMs: T0, target: outside }
      yield { type: 'file', path: 'm/pwned', mode: 0o644, mtimeMs: T0, size: 0, chunks: [] }
    }
    expect(await prepareWith(w, raw)).toHaveProperty('name', 'ManifestError')
    expect(await readdir(outside)).toEqual([])
  })

  it('a missing manifest blob is a typed error', async () => {
    const w = await makeWorld()
    const root: ManifestRoot = { manifestSize: 10, entryCount: 0, totalFileBytes: 0, chunks: [{ id: chunkIdOf(Buffer.from('nope')), size: 10 }] }
    expect(encodeRoot(root).byteLength).toBeGreaterThan(0)
    const err = await prepareWith(w, () => readManifestEntries(w.store.catalog, root))
    expect(err).toHaveProperty('name', 'ManifestError')
    expect((err as Error).cause).toHaveProperty('name', 'ManifestBlobMissingError')
  })

  it('a symlink planted in staging before a resume is replaced, never written through', async () => {
    const w = await makeWorld()
    await put(join(w.src, 'a.txt'), 'real content')
    await setDirTimes(w.src)
    const victim = join(w.tmp, 'victim.txt')
    await writeFile(victim, 'do not touch')
    const staging = w.home.stagingDir(TREE, 1)
    await mkdir(staging, { recursive: true })
    await symlink(victim, join(staging, 'a.txt'))
    const m = await w.build(1)
    await m.prepare()
    await m.finalize()
    expect(await readFile(victim, 'utf8')).toBe('do not touch')
    expect(await readFile(join(w.home.versionDir(TREE, 1), 'a.txt'), 'utf8')).toBe('real content')
    expect((await lstat(join(w.home.versionDir(TREE, 1), 'a.txt'))).isFile()).toBe(true)
  })

  it('ENOSPC becomes a DiskFullError naming tree, seq and path', () => {
    const enospc = Object.assign(new Error('no space left on device'), { code: 'ENOSPC' })
    const err = wrapError({ tree: TREE, seq: 4, path: 'big.iso' }, enospc)
    expect(err).toHaveProperty('name', 'DiskFullError')
    expect(err).toMatchObject({ tree: TREE, seq: 4, path: 'big.iso' })
    expect((err as Error).message).toContain(`${TREE}@4 at "big.iso"`)
  })

  it('methods out of order are refused', async () => {
    const w = await makeWorld()
    const m = await w.build(1)
    await expect(m.fill(chunkIdOf(Buffer.from('x')), Buffer.from('x'))).rejects.toHaveProperty('name', 'MaterializerStateError')
    await expect(m.finalize()).rejects.toHaveProperty('name', 'MaterializerStateError')
  })
})

async function buildInit (w: World, seq: number): Promise<MaterializeInit> {
  const published = await w.publish(seq)
  const tree = await w.store.catalog.getTree(TREE)
  const init: MaterializeInit = { tree: TREE, seq, entries: published.entries, envelope: published.envelope }
  if (tree?.currentSeq !== undefined) init.previous = await previousOf(w, tree.currentSeq)
  return init
}

/** A real copy (not hardlinks), modes and mtimes kept, to compare v1 against after later builds. */
async function copyTree (from: string, to: string): Promise<void> {
  const st = await lstat(from)
  if (st.isSymbolicLink()) { await symlink(await readlink(from), to); return }
  if (st.isFile()) { await writeFile(to, await readFile(from)); await chmod(to, st.mode & 0o7777); await utimes(to, when(Math.floor(st.mtimeMs)), when(Math.floor(st.mtimeMs))); return }
  await mkdir(to)
  for (const name of await readdir(from)) await copyTree(join(from, name), join(to, name))
  await chmod(to, st.mode & 0o7777)
  await utimes(to, when(Math.floor(st.mtimeMs)), when(Math.floor(st.mtimeMs)))
}

