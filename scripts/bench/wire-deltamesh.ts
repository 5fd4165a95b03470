// bench:wire (b), deltamesh: two real agents (agent/demo/local-cluster.ts: separate processes, libp2p on
// 127.0.0.1, LevelDB in temp dirs), a publisher and one subscriber. A tree is published first (not measured);
// once the publisher is idle again, the subscriber subscribes and the first sync is measured from the subscribe
// call to the subscriber holding the version: wall, CPU (/proc utime+stime) of the origin — serving only — and
// of the subscriber (with the children each reaped), and both peak RSS (VmHWM, reset before the sync).
import { writeFileSync } from 'node:fs'
import { Cluster, type Site } from '../../agent/demo/local-cluster.js'
import { AGENT_START_MS, api, wireAll } from './deltamesh.js'
import { cpuOf, peakRssMiB, sleep } from './proc.js'

export const FILE_TREE = 'bench/wire-file'
export const REPO_TREE = 'bench/wire-repo'
const SYNC_TIMEOUT_MS = 3_600_000

export interface Agents { pub: Site, sub: Site }

export interface SyncFigures {
  bytes: number
  files: number
  seconds: number
  originCpu: number
  subscriberCpu: number
  originRssMiB: number
  subscriberRssMiB: number
  /** deltamesh frames both ways, as the subscriber counts them (status counters bytesDown + bytesUp). */
  frameBytes: number
}

/** Publisher and subscriber, wired, the subscriber trusting the publisher for both trees; `nodeArgs` (e.g. --cpu-prof) for both. */
export async function startAgents (cluster: Cluster, nodeArgs: string[]): Promise<Agents> {
  const pub = await cluster.addSite('publisher')
  const sub = await cluster.addSite('subscriber')
  await wireAll([pub, sub], pub)
  for (const tree of [FILE_TREE, REPO_TREE]) await cluster.cli(['trust', '--home', sub.home, tree, pub.publisherKey])
  await Promise.all([pub, sub].map(async s => { await cluster.start(s, { DELTAMESH_LOG_LEVEL: 'warn' }, nodeArgs, AGENT_START_MS) }))
  return { pub, sub }
}

/** utime+stime of pid and of the children it reaped (the subscriber runs `sync -f` at finalize), seconds. */
function cpu (pid: number): number {
  const c = cpuOf(pid)
  return c.self + c.children
}

/** Resets VmHWM so the next peak is this phase's (Linux: /proc/PID/clear_refs, "5"). */
function resetPeakRss (pid: number): void {
  try { writeFileSync(`/proc/${pid}/clear_refs`, '5') } catch { /* older kernels: the peak is then the process's */ }
}

/** Waits until pid used under 5 % of a core over half a second (the publish's tail: writes, compaction), at most `maxMs`. */
async function settle (pid: number, maxMs: number): Promise<void> {
  const deadline = Date.now() + maxMs
  for (;;) {
    const c0 = cpuOf(pid).self
    await sleep(500)
    if (cpuOf(pid).self - c0 < 0.025 || Date.now() > deadline) return
  }
}

/** Publishes `source` as `tree` (not measured), then measures the subscriber's first sync of it into `mirror`. */
export async function firstSync (agents: Agents, tree: string, source: string, mirror: string, log: (s: string) => void): Promise<SyncFigures> {
  const pubPid = agents.pub.process?.pid as number
  const subPid = agents.sub.process?.pid as number
  const t = performance.now()
  const summary = await (await api(agents.pub)).publish({ tree, source, label: 'wire' })
  log(`  published ${summary.files} files, ${(summary.bytes / 1e6).toFixed(0)} MB in ${((performance.now() - t) / 1000).toFixed(1)} s (not measured)`)
  await settle(pubPid, 30_000)
  const subApi = await api(agents.sub)
  for (const pid of [pubPid, subPid]) resetPeakRss(pid)
  const frames = async (): Promise<number> => { const c = (await subApi.status()).counters; return c.bytesDown + c.bytesUp }
  const f0 = await frames()
  const c0 = { pub: cpu(pubPid), sub: cpu(subPid) }
  const t0 = performance.now()
  await subApi.subscribe({ tree, to: mirror })
  await subApi.waitForSync(tree, { minSeq: summary.seq, signal: AbortSignal.timeout(SYNC_TIMEOUT_MS) })
  const seconds = (performance.now() - t0) / 1000
  const c1 = { pub: cpu(pubPid), sub: cpu(subPid) }
  return {
    bytes: summary.bytes, files: summary.files, seconds,
    originCpu: c1.pub - c0.pub, subscriberCpu: c1.sub - c0.sub,
    originRssMiB: peakRssMiB(pubPid), subscriberRssMiB: peakRssMiB(subPid), frameBytes: await frames() - f0,
  }
}
