import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { describeTree, generateTree } from '../../agent/demo/tree-gen.js'
import { treeCommands } from '../helpers/tree-commands.js'
import { clusterPerTest } from '../helpers/cluster.js'

// A publisher applies retention to what it publishes, like any site: its catalog keeps the newest versions
// (default 3), not every version it ever published (found by the soak: +1 record per version at the origin).

const TREE = 'lab/retention'
const { subscribe, publish, syncDone } = treeCommands(TREE)
const clusters = clusterPerTest()

describe('retention at the publisher (real agents)', () => {
  it('keeps the newest 3 versions of 6 published; a subscriber joining afterwards still gets the newest', async () => {
    const cluster = await clusters.create()
    const source = join(cluster.dir, 'source')
    await generateTree(source, { seed: 'retention', files: 40, largeBytes: 0, largeFiles: 0, smallMax: 8 * 1024 })
    const origin = await cluster.addSite('origin')
    const lab = await cluster.addSite('lab')
    await cluster.wire(TREE, origin)
    await cluster.start(origin)
    let seq = 0
    for (let v = 1; v <= 6; v++) {
      await writeFile(join(source, 'version.txt'), `version ${v}\n`)
      seq = await publish(origin, source, `v${v}`)
    }
    expect(seq).toBe(6)
    const tree = (await cluster.status(origin)).trees.find(t => t.name === TREE)
    expect(tree?.versions.map(v => v.seq).sort((a, b) => a - b)).toEqual([4, 5, 6])
    await cluster.start(lab)
    const mirror = await subscribe(cluster, lab)
    await syncDone(lab, 6)
    expect(await describeTree(mirror)).toEqual(await describeTree(source))
  })
})
