import { generateKeyPairSync } from 'node:crypto'
import { chmod, link, readFile, rename, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { openEnvelope, rawPublicKeyOf, signEnvelope } from '../../protocol/envelope.js'
import { ManifestWriter, type ChunkingParams } from '../../protocol/manifest.js'
import { scanTree } from '../../agent/scan/scanner.js'
import { materializeLocal, type MaterializeInit } from '../../agent/versions/materializer.js'
import { loadRoot, readManifestEntries, storeManifest } from '../../agent/store/manifest-io.js'
import { verifyTree } from '../../agent/daemon/verify-repair.js'
import { put as putFile } from '../helpers/fs.js'
import { cutFixed } from '../helpers/bytes.js'
import { storeWorlds, type SourceWorld } from '../helpers/world.js'

// verify --repair on real files and a real store (agent/versions/repair.ts): names of a damaged inode that expect the
// same content are repaired together and stay one inode; a name that expects other content keeps its inode.

const CHUNKING: ChunkingParams = { algorithm: 'rabin', avgBits: 12, minSize: 64, maxSize: 4096 }
const TREE = 'mirror/repair'
const T0 = 1_700_000_000_000
const keys = generateKeyPairSync('ed25519')
const worlds = storeWorlds('deltamesh-repair-')

async function makeWorld (): Promise<SourceWorld> {
  return await worlds.withSource(TREE, async src => {
    await putFile(join(src, 'same.txt'), 'the same in every version\n', 0o644, T0)
    await putFile(join(src, 'ro', 'r.txt'), 'read only, in a read-only directory\n', 0o444, T0)
    await chmod(join(src, 'ro'), 0o555)
  })
}

/** Publishes the source as version `seq` (v.txt differs per version) and materializes it over the current one. */
async function buildVersion (w: SourceWorld, seq: number): Promise<string> {
  await putFile(join(w.src, 'v.txt'), `version ${seq}\n`, 0o644, T0)
  const writer = new ManifestWriter({ chunking: CHUNKING })
  const parts: Uint8Array[] = [writer.start()]
  for await (const item of scanTree(w.src, { chunkFile: async path => cutFixed(await readFile(path), 4096) })) {
    parts.push(writer.write(item.entry))
    if (item.file !== undefined) await w.store.index.indexFile(w.sourceRoot.id, item.entry.path, item.file.chunks)
  }
  const stored = await storeManifest(w.store.catalog, [Buffer.concat(parts)])
  const envelope = signEnvelope({ tree: TREE, seq, label: '', createdAtMs: T0, rootHash: stored.rootHash, rootSize: stored.rootBytes.byteLength, publisherKey: rawPublicKeyOf(keys.privateKey) }, keys.privateKey).bytes
  const init: MaterializeInit = { tree: TREE, seq, envelope, entries: () => readManifestEntries(w.store.catalog, stored.root) }
  const current = (await w.store.catalog.getTree(TREE))?.currentSeq
  if (current !== undefined) {
    const prev = await w.store.catalog.getVersion(TREE, current)
    const prevRoot = await loadRoot(w.store.catalog, openEnvelope(prev!.envelope).rootHash)
    init.previous = { dir: prev!.path!, entries: () => readManifestEntries(w.store.catalog, prevRoot) }
  }
  return (await materializeLocal({ index: w.store.index, catalog: w.store.catalog, home: w.home }, init)).path!
}

const inode = async (path: string): Promise<number> => (await stat(path)).ino
const verify = async (w: SourceWorld, seq: number, repair = false): ReturnType<typeof verifyTree> => await verifyTree({ catalog: w.store.catalog, index: w.store.index }, TREE, { seq, repair })

describe('verify --repair', () => {
  it('a damaged file shared by two versions is rebuilt once and both names share the repaired file; a read-only directory keeps its mode', async () => {
    const w = await makeWorld()
    const v1 = await buildVersion(w, 1)
    const v2 = await buildVersion(w, 2)
    const [a, b] = [join(v1, 'ro', 'r.txt'), join(v2, 'ro', 'r.txt')]
    expect(await inode(a)).toBe(await inode(b))
    await chmod(b, 0o644)
    await writeFile(b, 'READ ONLY, in a read-only directory\n') // same size, other bytes: both versions damaged
    expect((await verify(w, 2)).problems.map(p => p.path)).toContain('ro/r.txt')
    expect((await verify(w, 1)).problems.map(p => p.path)).toContain('ro/r.txt')

    const repaired = await verify(w, 2, true)
    expect(repaired.repair?.repaired).toEqual([{ path: 'ro/r.txt', fetchedChunks: 0, alsoIn: [1] }])
    expect(repaired.problems).toEqual([])
    expect((await verify(w, 1)).problems).toEqual([])
    expect(await inode(a)).toBe(await inode(b))
    expect(await readFile(b, 'utf8')).toBe('read only, in a read-only directory\n')
    expect((await stat(join(v2, 'ro'))).mode & 0o7777).toBe(0o555)
  })

  it('a name of the damaged inode that expects other content keeps that inode; what no local file holds is reported, not invented', async () => {
    const w = await makeWorld()
    const v1 = await buildVersion(w, 1)
    const v2 = await buildVersion(w, 2)
    // by hand, v1's v.txt ("version 1") made a link to v2's ("version 2"), then that inode damaged
    await link(join(v2, 'v.txt'), join(v1, 'v.txt.tmp'))
    await rename(join(v1, 'v.txt.tmp'), join(v1, 'v.txt'))
    await writeFile(join(v2, 'v.txt'), 'VERSION 2\n')
    const shared = await inode(join(v1, 'v.txt'))

    const repaired = await verify(w, 2, true)
    expect(repaired.repair?.repaired).toEqual([{ path: 'v.txt', fetchedChunks: 0, alsoIn: [] }]) // v1 expects other content
    expect(repaired.problems).toEqual([])
    expect(await inode(join(v1, 'v.txt'))).toBe(shared) // untouched: still the damaged inode
    expect(await inode(join(v2, 'v.txt'))).not.toBe(shared)
    expect(await readFile(join(v1, 'v.txt'), 'utf8')).toBe('VERSION 2\n')

    // v1's own bytes ("version 1") are on no local file any more, and no agent runs to ask peers
    const v1Repair = await verify(w, 1, true)
    expect(v1Repair.repair?.repaired).toEqual([])
    expect(v1Repair.repair?.unrepaired).toEqual([{ path: 'v.txt', reason: expect.stringMatching(/on no local file \(start the agent/) }])
    expect(v1Repair.problems.map(p => p.path)).toContain('v.txt')
  })

  it('refuses a version that is this site\'s own publish (its files are its source)', async () => {
    const w = await makeWorld()
    await buildVersion(w, 1)
    // the publisher's record: complete, its path the source, its root the source root
    await w.store.catalog.putVersion({ ...(await w.store.catalog.getVersion(TREE, 1))!, seq: 7, path: w.src, rootId: w.sourceRoot.id })
    await writeFile(join(w.src, 'same.txt'), 'THE SAME in every version\n')
    await expect(verify(w, 7, true)).rejects.toMatchObject({ name: 'RepairRefusedError', message: expect.stringContaining('publish again') })
  })
})
