import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { cliOk, waitFor, type Cluster, type Site } from '../../agent/demo/local-cluster.js'
import type { DashboardSnapshot } from '../../agent/dashboard/snapshot.js'
import { describeTree, generateTree, mutateTree, type TreeSpec } from '../../agent/demo/tree-gen.js'
import { treeCommands } from '../helpers/tree-commands.js'
import { clusterPerTest } from '../helpers/cluster.js'

// The RDO shape (issue 19, part 3): a build server that nobody can reach publishes through a public hub. The
// build server and a lab both have `listen = []` and dial only the hub; the hub lists them by /p2p/<peer id>
// alone. The build server must publish, serve the chunks over the connection it opened, appear in every
// site's network view, and be reconnected after the hub restarts.

const TREE = 'rdo/trunk/centos9'
const { subscribe, publish, syncDone } = treeCommands(TREE)
const SPEC: TreeSpec = { seed: 'e2e-dial-out', files: 120, largeBytes: 4 * 1024 * 1024, largeFiles: 1, smallMax: 32 * 1024 }

const clusters = clusterPerTest()

/** hub listens; build and lab listen on nothing and dial the hub; the hub admits them by peer id. */
async function hubAndTwoLabs (cluster: Cluster): Promise<{ hub: Site, build: Site, lab: Site }> {
  const hub = await cluster.addSite('hub')
  const build = await cluster.addSite('build')
  const lab = await cluster.addSite('lab')
  for (const s of [build, lab]) {
    await cluster.editConfig(s, { agent: { listen: [] } })
    await cliOk(['peers', 'add', '--home', s.home, '--name', 'hub', hub.multiaddr])
    await cliOk(['peers', 'add', '--home', hub.home, '--name', s.name, `/p2p/${s.peerId}`])
  }
  for (const s of cluster.sites) {
    await cluster.editConfig(s, { dashboard: { statusIntervalMs: 300 } })
    await cliOk(['trust', '--home', s.home, TREE, build.publisherKey])
  }
  return { hub, build, lab }
}

async function snapshot (cluster: Cluster, site: Site): Promise<DashboardSnapshot> {
  const status = await cluster.status(site)
  if (status.dashboard === undefined) throw new Error(`${site.name}: no dashboard`)
  const res = await fetch(new URL('/api/snapshot', status.dashboard.url))
  return await res.json() as DashboardSnapshot
}

/** `site`'s network view shows `other` fresh (state ok) and holding `seq` of the tree. */
async function seesHolding (cluster: Cluster, site: Site, other: Site, seq: number): Promise<boolean> {
  const view = await snapshot(cluster, site)
  const row = view.sites.find(s => s.peerId === other.peerId)
  return row?.state === 'ok' && row.status?.trees.some(t => t.name === TREE && t.held.includes(seq)) === true
}

describe('a publisher that only dials out (real agents: a hub and two labs with listen = [])', () => {
  it('publishes through the hub, serves chunks on its own connection, shows in the network view, and is back after the hub restarts', async () => {
    const cluster = await clusters.create('deltamesh-dialout-')
    const source = join(cluster.dir, 'source')
    await generateTree(source, SPEC)
    const { hub, build, lab } = await hubAndTwoLabs(cluster)
    for (const s of cluster.sites) await cluster.start(s)
    const buildStatus = await cluster.status(build)
    expect(buildStatus.multiaddrs).toEqual([])
    const hubMirror = await subscribe(cluster, hub)
    const labMirror = await subscribe(cluster, lab)

    const seq1 = await publish(build, source, 'v1')
    await Promise.all([syncDone(hub, seq1), syncDone(lab, seq1)])
    const v1 = await describeTree(source)
    expect(await describeTree(hubMirror)).toEqual(v1)
    expect(await describeTree(labMirror)).toEqual(v1)
    // the hub got its chunks from the build server, over the connection the build server dialled
    const hubPeers = (await cluster.status(hub)).peers
    const buildRow = hubPeers.find(p => p.peerId === build.peerId)
    expect(buildRow?.connected).toBe(true)
    expect(buildRow?.chunkBytesDown).toBeGreaterThan(0)
    expect((await cluster.status(build)).counters.chunkBytesUp).toBe(buildRow?.chunkBytesDown)
    // the lab never connects to the build server; it sees it through the hub's gossip
    expect((await cluster.status(lab)).peers.find(p => p.peerId === build.peerId)?.connected ?? false).toBe(false)
    await waitFor('hub and lab to see build holding v1', async () => await seesHolding(cluster, hub, build, seq1) && await seesHolding(cluster, lab, build, seq1), 30_000)

    // the hub restarts (on the same address): both labs dial it again, and a new version flows
    await cluster.stop(hub)
    await cluster.start(hub)
    await waitFor('build and lab to reconnect to the restarted hub', async () => {
      const peers = (await cluster.status(hub)).peers
      return [build, lab].every(s => peers.find(p => p.peerId === s.peerId)?.connected === true)
    }, 30_000)
    await mutateTree(source, 'e2e-dial-out-v2')
    const seq2 = await publish(build, source, 'v2')
    await Promise.all([syncDone(hub, seq2), syncDone(lab, seq2)])
    const v2 = await describeTree(source)
    expect(await describeTree(hubMirror)).toEqual(v2)
    expect(await describeTree(labMirror)).toEqual(v2)
    await waitFor('lab to see build holding v2', async () => await seesHolding(cluster, lab, build, seq2), 30_000)
  }, 240_000)
})
