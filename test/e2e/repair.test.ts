import { mkdir, open, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { cliOk, runCli, type Cluster, type Site } from '../../agent/demo/local-cluster.js'
import { pseudoRandomBytes } from '../../agent/demo/tree-gen.js'
import type { VerifySummary } from '../../agent/api/api.js'
import { HomeLayout } from '../../agent/core/home.js'
import { treeCommands } from '../helpers/tree-commands.js'
import { clusterPerTest } from '../helpers/cluster.js'

// verify --repair with real agents (issue 24.5): a file damaged on the lab's disk — the same inode in two held
// versions, as unchanged files are hardlinked between versions — is found by verify, named by sync, rebuilt
// from the origin's chunks, and both versions share the repaired file afterwards.

const TREE = 'lab/repair'
const { publish, syncDone } = treeCommands(TREE)
const clusters = clusterPerTest()

async function start (): Promise<{ c: Cluster, origin: Site, lab: Site, src: string }> {
  const c = await clusters.create()
  const src = join(c.dir, 'source')
  await mkdir(join(src, 'images'), { recursive: true })
  await writeFile(join(src, 'images', 'disk.img'), pseudoRandomBytes('repair-img', 2 * 1024 * 1024))
  await writeFile(join(src, 'notes.txt'), 'version one\n')
  const origin = await c.addSite('origin')
  const lab = await c.addSite('lab')
  await c.wire(TREE, origin)
  for (const s of c.sites) await c.start(s)
  return { c, origin, lab, src }
}

const verify = async (lab: Site, ...args: string[]): Promise<{ code: number | null, result: VerifySummary }> => {
  const r = await runCli(['verify', '--home', lab.home, TREE, '--json', ...args])
  return { code: r.code, result: JSON.parse(r.stdout) as VerifySummary }
}

describe('verify --repair (real agents)', () => {
  it('restores a damaged file shared by two versions; verify is clean after and sync no longer calls the tree complete meanwhile', async () => {
    const { c, origin, lab, src } = await start()
    const mirror = join(c.dir, 'lab-mirror')
    await cliOk(['subscribe', '--home', lab.home, TREE, '--to', mirror])
    await syncDone(lab, await publish(origin, src, 'v1'))
    await writeFile(join(src, 'notes.txt'), 'version two\n')
    const seq2 = await publish(origin, src, 'v2')
    await syncDone(lab, seq2)
    const v1 = join(new HomeLayout(lab.home).versionDir(TREE, 1), 'images', 'disk.img')
    const image = join(mirror, 'images', 'disk.img')
    expect((await stat(image)).ino).toBe((await stat(v1)).ino) // unchanged between versions: one inode
    // the two ends of the link count the same chunks (a compressed BLOCKS frame counts each chunk it carries)
    const up = (await c.status(origin)).peers.find(p => p.peerId === lab.peerId)
    const down = (await c.status(lab)).peers.find(p => p.peerId === origin.peerId)
    expect(up?.chunksUp).toBeGreaterThan(40)
    expect([up?.chunksUp, up?.chunkBytesUp]).toEqual([down?.chunksDown, down?.chunkBytesDown])

    // one byte changed in place, at offset 1000: both versions hold the damaged inode
    const handle = await open(image, 'r+')
    await handle.write(Buffer.from([0x42 ^ (await handle.read(Buffer.alloc(1), 0, 1, 1000)).buffer[0]!]), 0, 1, 1000)
    await handle.close()

    const damaged = await verify(lab)
    expect(damaged.code).toBe(2)
    // the write moved its mtime too; the content is checked chunk by chunk: the first chunk holds byte 1000
    expect(damaged.result.problems).toEqual([
      { path: 'images/disk.img', reason: expect.stringMatching(/^mtime .*, manifest says /) },
      { path: 'images/disk.img', reason: expect.stringMatching(/^content differs in bytes 0–\d+ \(chunk 1 of \d+\)$/) },
    ])
    const sync = await runCli(['sync', '--home', lab.home, TREE, '--timeout', '30'])
    expect(sync.code).toBe(2)
    expect(sync.stdout).not.toContain('complete')
    expect(sync.stderr).toContain(`${TREE}@${seq2} is held here but damaged: 1 file differs from the manifest`)
    expect(sync.stderr).toContain(`deltamesh verify --repair --home ${lab.home} ${TREE}`)

    const repaired = await verify(lab, '--repair')
    expect(repaired.code).toBe(0)
    expect(repaired.result.repair?.repaired).toEqual([{ path: 'images/disk.img', fetchedChunks: expect.any(Number), alsoIn: [1] }])
    // the damaged chunk was on no other local file: it came from the origin
    expect(repaired.result.repair?.repaired[0]?.fetchedChunks).toBeGreaterThan(0)
    expect(repaired.result.problems).toEqual([])
    expect((await verify(lab)).result.problems).toEqual([])
    expect((await verify(lab, '--seq', '1')).result.problems).toEqual([])
    expect((await stat(image)).ino).toBe((await stat(v1)).ino) // still one file for both versions
    expect(Buffer.compare(await readFile(image), pseudoRandomBytes('repair-img', 2 * 1024 * 1024))).toBe(0)

    const after = await runCli(['sync', '--home', lab.home, TREE, '--timeout', '30'])
    expect(after.code).toBe(0)
    expect(after.stdout).toContain(`sync ${TREE}@${seq2}: held here already, nothing to fetch`)
  })
})

