import { join } from 'node:path'
import { isDeepStrictEqual } from 'node:util'
import { HomeLayout } from '../core/home.js'
import { connectAgent } from '../control/client.js'
import { formatBytes } from '../core/format.js'
import type { AgentStatus, SyncProgress } from '../api/api.js'
import { Cluster, type Site } from './local-cluster.js'
import { DEMO_TREE, describeTree, generateTree, mutateTree } from './tree-gen.js'

const TREE = 'demo/compose/BaseOS'

function say (line: string): void { process.stdout.write(`${line}\n`) }

async function bytesDown (site: Site): Promise<number> {
  const api = await connectAgent(new HomeLayout(site.home))
  if (api === undefined) throw new Error(`agent ${site.name} is not answering`)
  const status: AgentStatus = await api.status()
  return status.counters.chunkBytesDown
}

async function syncAll (sites: Site[], minSeq: number): Promise<void> {
  await Promise.all(sites.map(async site => {
    const api = await connectAgent(new HomeLayout(site.home))
    if (api === undefined) throw new Error(`agent ${site.name} is not answering`)
    let last = 0
    const result = await api.waitForSync(TREE, {
      signal: AbortSignal.timeout(300_000),
      minSeq,
      onProgress: (p: SyncProgress) => {
        if (Date.now() - last < 1000 || p.phase !== 'fetching') return
        last = Date.now()
        say(`  ${site.name}: ${p.phase} ${formatBytes(p.bytesDone)} / ${formatBytes(p.bytesTotal)} from ${p.sources} peer(s)`)
      },
    })
    say(`  ${site.name}: holds ${TREE}@${result.seq} (${formatBytes(result.bytesFetched)} fetched in ${(result.durationMs / 1000).toFixed(1)} s)`)
  }))
}

/** Publishes through the origin's agent; prints the summary; returns the new seq. */
async function publish (cluster: Cluster, origin: Site, source: string, label: string): Promise<number> {
  const result = JSON.parse(await cluster.cli(['publish', '--home', origin.home, TREE, source, '--label', label, '--json'])) as { seq: number, files: number, bytes: number, chunks: number, newChunks: number, newBytes: number, durationMs: number }
  say(`  published ${TREE}@${result.seq} (${label}): ${result.files} files, ${formatBytes(result.bytes)}, ${result.chunks} chunks, ${result.newChunks} new (${formatBytes(result.newBytes)}), ${(result.durationMs / 1000).toFixed(2)} s`)
  return result.seq
}

/**
 * `deltamesh demo`: three agents on 127.0.0.1 in a temp dir. The origin publishes a generated tree; two
 * labs subscribe and converge; the origin publishes a changed version; the labs pull only the delta.
 */
export async function runDemo (options: { keep?: boolean } = {}): Promise<void> {
  const cluster = await Cluster.create('deltamesh-demo-')
  const stopOnSignal = (): void => { void cluster.cleanup().finally(() => process.exit(130)) }
  process.once('SIGINT', stopOnSignal)
  process.once('SIGTERM', stopOnSignal)
  try {
    say(`deltamesh demo in ${cluster.dir}`)
    const source = join(cluster.dir, 'source')
    say('generating a sample compose tree (packages, images, symlinks)…')
    await generateTree(source, DEMO_TREE)
    const origin = await cluster.addSite('origin')
    const labA = await cluster.addSite('lab-a')
    const labB = await cluster.addSite('lab-b')
    await cluster.wire(TREE, origin)
    for (const site of cluster.sites) await cluster.start(site)
    say(`started 3 agents: ${cluster.sites.map(s => `${s.name} ${s.multiaddr}`).join('\n                   ')}`)
    const dashboards = await Promise.all(cluster.sites.map(async s => `${s.name} ${(await cluster.status(s)).dashboard?.url ?? '(off)'}`))
    say(`dashboards:       ${dashboards.join('\n                   ')}`)
    for (const lab of [labA, labB]) await cluster.cli(['subscribe', '--home', lab.home, TREE, '--to', join(cluster.dir, `${lab.name}-mirror`)])

    say('\n1) origin publishes v1')
    await syncAll([labA, labB], await publish(cluster, origin, source, 'compose-1'))
    const v1Down = await Promise.all([labA, labB].map(bytesDown))
    const expected = await describeTree(source)
    for (const lab of [labA, labB]) {
      const same = isDeepStrictEqual(await describeTree(join(cluster.dir, `${lab.name}-mirror`)), expected)
      say(`  ${lab.name}-mirror identical to the source: ${same ? 'yes' : 'NO'}`)
      if (!same) throw new Error(`${lab.name} did not converge to the published tree`)
    }

    say('\n2) origin publishes v2 (5% of files edited, some added/removed/renamed, 100 KB inserted into an image)')
    const change = await mutateTree(source, 'demo-v2')
    say(`  ${change.changed} edited, ${change.added} added, ${change.deleted} deleted, ${change.renamed} renamed`)
    await syncAll([labA, labB], await publish(cluster, origin, source, 'compose-2'))
    const v2Down = await Promise.all([labA, labB].map(bytesDown))
    const expected2 = await describeTree(source)
    const treeBytes = Object.values(expected2).reduce((n, d) => n + (d.startsWith('file') ? Number(d.split(' ')[2]) : 0), 0)
    say('\nbytes each lab received (chunk payload), against the tree size')
    say(`  tree size: ${formatBytes(treeBytes)}`)
    for (const [i, lab] of [labA, labB].entries()) {
      const same = isDeepStrictEqual(await describeTree(join(cluster.dir, `${lab.name}-mirror`)), expected2)
      const delta = (v2Down[i] as number) - (v1Down[i] as number)
      say(`  ${lab.name}: v1 ${formatBytes(v1Down[i] as number)}, v2 update ${formatBytes(delta)} (${(100 * delta / treeBytes).toFixed(1)}% of the tree); identical: ${same ? 'yes' : 'NO'}`)
      if (!same) throw new Error(`${lab.name} did not converge to v2`)
    }
    const originStatus = await (await connectAgent(new HomeLayout(origin.home)))?.status()
    say(`  origin uploaded ${formatBytes(originStatus?.counters.chunkBytesUp ?? 0)} of chunks in total; the labs served each other the rest`)
    say('\ndemo complete.')
  } finally {
    process.off('SIGINT', stopOnSignal)
    process.off('SIGTERM', stopOnSignal)
    if (options.keep === true) say(`kept ${cluster.dir} (agents stopped)`)
    await cluster.cleanup({ keepFiles: options.keep === true })
  }
}
