// Scale on one machine: 1 publisher + 16 subscribers (17 agent processes on 127.0.0.1) with every site's
// uplink and downlink limited, so that the time for all to hold a version can be set against what the links
// allow. Two rounds: v1 from nothing (the whole tree; this is where the swarm matters), then v2 (a delta).
import { join } from 'node:path'
import { Cluster, type Site } from '../../agent/demo/local-cluster.js'
import { generateTree, mutateTree } from '../../agent/demo/tree-gen.js'
import { parseRate } from '../../agent/core/rate.js'
import { editConfig } from '../../agent/demo/config-edit.js'
import { HomeLayout } from '../../agent/core/home.js'
import { AGENT_START_MS, api, TREE, waitSeq, wireAll } from './deltamesh.js'
import { describeTreeInParallel } from './describe-tree.js'
import { cpuOf } from './proc.js'
import { checkTreeMatches } from './tree-compare.js'
import { chunkSet } from './chunk-set.js'

export const SCALE_SUBSCRIBERS = 16

export interface ScaleRound { bytes: number, seconds: number, slowest: number, fastest: number, pubUp: number, pubCpu: number, bound: number, star: number }
export interface ScaleFigures { sizeMB: number, rate: string, files: number, v1: ScaleRound, v2: ScaleRound }

/** `manifest --entries` of the scale tree, on a machine shared with the other runs. */
const LIST_MS = 1_800_000

/**
 * No schedule beats: the origin sending one copy, one downlink taking all of it, and N copies over the sum
 * of all uplinks (the classic bound for distributing a file to N peers). Star: the origin sends N copies.
 */
function bounds (bytes: number, n: number, rate: number): { bound: number, star: number } {
  return { bound: Math.max(bytes / rate, bytes / rate, n * bytes / (rate + n * rate)), star: n * bytes / rate }
}

export async function scaleRounds (cluster: Cluster, work: string, sizeMB: number, rate: string, timeoutMs: number, log: (s: string) => void): Promise<ScaleFigures> {
  const source = join(work, 'scale-source')
  // generateTree's package-repository shape: 60 % in small files, 40 % in 2 images
  await generateTree(source, { seed: 'deltamesh-bench-scale', files: Math.max(50, Math.round(0.6 * sizeMB * 1e6 / 65536)), largeBytes: Math.round(0.4 * sizeMB * 1e6), largeFiles: 2, smallMax: 256 * 1024 })
  const v1 = await describeTreeInParallel(source)
  const v1Chunks = await chunkSet(source, LIST_MS)
  const pub = await cluster.addSite('publisher')
  const subs: Site[] = []
  for (let i = 1; i <= SCALE_SUBSCRIBERS; i++) subs.push(await cluster.addSite(`s${String(i).padStart(2, '0')}`))
  await wireAll([pub, ...subs], pub)
  for (const s of [pub, ...subs]) await editConfig(new HomeLayout(s.home).config, { limits: { up: rate, down: rate } })
  log(`scale: starting 17 agents (every up- and downlink ${rate})`)
  // all at once: one by one, each waiting for the others' dials and gossip, took 15–20 s an agent on a busy machine
  await Promise.all([pub, ...subs].map(async s => { await cluster.start(s, { DELTAMESH_LOG_LEVEL: 'warn' }, [], AGENT_START_MS) }))
  const mirrors = subs.map(s => join(cluster.dir, `${s.name}-mirror`))
  for (const [i, s] of subs.entries()) await (await api(s)).subscribe({ tree: TREE, to: mirrors[i] as string })
  const pubApi = await api(pub)
  const pubPid = pub.process?.pid as number
  const r = parseRate(rate)

  const round = async (label: string, bytes: number, expected: Record<string, string>): Promise<ScaleRound> => {
    const up0 = (await pubApi.status()).counters.bytesUp
    const c0 = cpuOf(pubPid).self
    const t0 = performance.now()
    const published = await pubApi.publish({ tree: TREE, source, label })
    const times = await waitSeq(subs, published.seq, timeoutMs)
    const seconds = (performance.now() - t0) / 1000
    const pubUp = (await pubApi.status()).counters.bytesUp - up0
    const pubCpu = cpuOf(pubPid).self - c0
    for (const [i, m] of mirrors.entries()) await checkTreeMatches(`scale: subscriber ${i + 1}`, m, expected, label)
    // waitSeq times count from its own start, after the publish returned
    const publishSeconds = seconds - Math.max(...times)
    return { bytes, seconds, slowest: publishSeconds + Math.max(...times), fastest: publishSeconds + Math.min(...times), pubUp, pubCpu, ...bounds(bytes, SCALE_SUBSCRIBERS, r) }
  }

  log('scale: v1 from nothing to 16 subscribers')
  const treeBytes = [...v1Chunks.values()].reduce((a, b) => a + b, 0)
  const first = await round('v1', treeBytes, v1)
  await mutateTree(source, 'bench-scale-v2')
  const v2 = await describeTreeInParallel(source)
  const v2Chunks = await chunkSet(source, LIST_MS)
  let delta = 0
  for (const [id, size] of v2Chunks) if (!v1Chunks.has(id)) delta += size
  log('scale: v2 (a delta) to 16 subscribers')
  const second = await round('v2', delta, v2)
  return { sizeMB, rate, files: Object.values(v1).filter(v => v.startsWith('file')).length, v1: first, v2: second }
}
