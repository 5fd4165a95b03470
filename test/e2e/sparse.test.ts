import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdir, open, stat, truncate, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { cliOk } from '../../agent/demo/local-cluster.js'
import { pseudoRandom } from '../helpers/bytes.js'
import { treeCommands } from '../helpers/tree-commands.js'
import { clusterPerTest } from '../helpers/cluster.js'

// Sparse files between real agents (issue 23): a 100 MiB file that is nearly all hole crosses as its few data
// chunks, and lands as a sparse file with the same bytes.

const TREE = 'lab/images'
const { subscribe, publish, syncDone } = treeCommands(TREE)
const MiB = 1024 * 1024
const SIZE = 100 * MiB

const clusters = clusterPerTest()

async function sha256 (path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const piece of createReadStream(path)) hash.update(piece as Buffer)
  return hash.digest('hex')
}

async function writeAt (path: string, offset: number, bytes: Uint8Array): Promise<void> {
  const fh = await open(path, 'r+')
  try { await fh.write(bytes, 0, bytes.byteLength, offset) } finally { await fh.close() }
}

describe('sparse files (real agents)', () => {
  it('a 100 MiB sparse file syncs as its data chunks and lands sparse; data written into a hole syncs too', async () => {
    const cluster = await clusters.create()
    const source = join(cluster.dir, 'source')
    await mkdir(source)
    const img = join(source, 'disk.img')
    await writeFile(img, '')
    await truncate(img, SIZE)
    await writeAt(img, 0, pseudoRandom(64 * 1024, 1))
    await writeAt(img, SIZE / 2 + 12_345, pseudoRandom(100_000, 2))
    await writeAt(img, SIZE - 50_000, pseudoRandom(50_000, 3))
    await writeFile(join(source, 'README'), 'a disk image\n')
    expect((await stat(img)).blocks * 512).toBeLessThan(2 * MiB)

    const origin = await cluster.addSite('origin')
    const a = await cluster.addSite('a')
    await cluster.wire(TREE, origin)
    for (const s of cluster.sites) await cluster.start(s)
    const mirror = await subscribe(cluster, a)

    const expectMirrored = async (): Promise<void> => {
      const got = join(mirror, 'disk.img')
      expect(await sha256(got)).toBe(await sha256(img))
      const st = await stat(got)
      expect(st.size).toBe(SIZE)
      // the holes are holes at the subscriber too, and the zeros beside the data inside its chunks: as many
      // blocks as the source's
      expect(st.blocks * 512).toBeLessThan(2 * MiB)
      expect(st.blocks).toBeLessThanOrEqual((await stat(img)).blocks)
      expect(await cliOk(['verify', '--home', a.home, TREE])).toContain('0 problem(s)')
    }

    const before = await cluster.status(a)
    const seq1 = await publish(origin, source, 'v1')
    await syncDone(a, seq1)
    await expectMirrored()
    const afterV1 = await cluster.status(a)
    // only the data chunks crossed the wire (each up to 256 KiB, the zeros around the data included): chunks,
    // manifest and framing together are 2 % of the file
    expect(afterV1.counters.bytesDown - before.counters.bytesDown).toBeLessThan(2 * MiB)
    expect(afterV1.counters.chunkBytesDown - before.counters.chunkBytesDown).toBeLessThan(2 * MiB)

    // v2: data written into the middle of a hole
    await writeAt(img, 30 * MiB, pseudoRandom(200_000, 4))
    const seq2 = await publish(origin, source, 'v2')
    await syncDone(a, seq2)
    await expectMirrored()
    const afterV2 = await cluster.status(a)
    expect(afterV2.counters.chunkBytesDown - afterV1.counters.chunkBytesDown).toBeGreaterThan(0)
    expect(afterV2.counters.chunkBytesDown - afterV1.counters.chunkBytesDown).toBeLessThan(2 * MiB)
  })
})
