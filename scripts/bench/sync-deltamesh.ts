// bench:sync's deltamesh side: the v2 round (the subscribers' waits in place, then the publisher publishes) with
// the agents' counters, CPU from /proc, TCP bytes from ss and optional perf records; and the floor of a publish.
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import type { AgentStatus, SyncPhase, SyncProgress, SyncResult } from '../../agent/api/api.js'
import { chunkFile } from '../../agent/chunk/chunker.js'
import { sleep, type Site } from '../../agent/demo/local-cluster.js'
import { DEFAULT_CHUNKING } from '../../protocol/chunking.js'
import { api } from './deltamesh.js'
import { cpuOf, peakRssMiB, startPerf, type Cpu } from './proc.js'
import { TcpMeter } from './tcp.js'

export const SYNC_TREE = 'bench/compose/BaseOS'
export const SYNC_SUBSCRIBERS = 4

/** Seconds since `t0` at which each subscriber first reported each sync phase (and 'done'). */
export type PhaseTimes = Array<Partial<Record<SyncPhase | 'done', number>>>

export async function syncAll (subs: Site[], minSeq: number, timeoutMs: number, phases?: { t0: () => number, times: PhaseTimes }): Promise<SyncResult[]> {
  return await Promise.all(subs.map(async s => {
    const seen: Partial<Record<SyncPhase | 'done', number>> = {}
    phases?.times.push(seen)
    const onProgress = phases === undefined ? undefined : (p: SyncProgress): void => { if (p.seq >= minSeq) seen[p.phase] ??= (performance.now() - phases.t0()) / 1000 }
    const r = await (await api(s)).waitForSync(SYNC_TREE, { minSeq, signal: AbortSignal.timeout(timeoutMs), onProgress })
    if (phases !== undefined) seen.done = (performance.now() - phases.t0()) / 1000
    return r
  }))
}

export interface DeltameshRound {
  publishSeconds: number
  wallSeconds: number
  phases: PhaseTimes
  publishCpu: number
  serveCpu: number
  publisherRssMiB: number
  subscriberCpu: number
  publish: { seq: number, newBytes: number, newChunks: number, files: number, cachedFiles: number, verifiedFiles?: number, manifestBytes: number, bytes: number }
  results: SyncResult[]
  subs: Array<{ framesDown: number, framesUp: number, chunkDown: number, tcpDown?: number, tcpUp?: number }>
  pub: { framesUp: number, framesDown: number, chunkUp: number, tcpUp?: number, tcpDown?: number }
  tcpAllReceived?: number
  framesAllDown: number
  tcp: { closed: number, opened: number } | undefined
}

/** Waits (up to 60 s) until each restarted site is connected to SYNC_SUBSCRIBERS peers again. */
export async function waitReconnected (sites: Site[]): Promise<void> {
  const deadline = Date.now() + 60_000
  for (const s of sites) {
    while ((await (await api(s)).status()).peers.filter(p => p.connected).length < SYNC_SUBSCRIBERS) {
      if (Date.now() > deadline) throw new Error(`${s.name} did not reconnect to its peers`)
      await sleep(200)
    }
  }
}

export async function deltameshRound (publisher: Site, subs: Site[], source: string, timeoutMs: number, perfDir?: string): Promise<DeltameshRound> {
  const all = [publisher, ...subs]
  const pids = all.map(s => s.process?.pid as number)
  const statusBefore: AgentStatus[] = await Promise.all(all.map(async s => await (await api(s)).status()))
  const cpuBefore = pids.map(cpuOf)
  const meter = spawnSync('ss', ['-V']).status === 0 ? new TcpMeter(new Set(pids)) : undefined
  const pubApi = await api(publisher)
  const t0 = performance.now()
  // the waits are in place before the version exists; each resolves when that agent holds seq ≥ 2
  const phases: PhaseTimes = []
  const syncs = syncAll(subs, 2, timeoutMs, { t0: () => t0, times: phases })
  syncs.catch(() => {}) // observed below
  const perfPublish = perfDir === undefined ? undefined : await startPerf(pids[0] as number, join(perfDir, 'publish.data'))
  const published = await pubApi.publish({ tree: SYNC_TREE, source, label: 'v2' })
  const tPublished = performance.now()
  const cpuPublished = cpuOf(pids[0] as number)
  await perfPublish?.stop()
  const perfServe = perfDir === undefined ? undefined : await startPerf(pids[0] as number, join(perfDir, 'serve.data'))
  const perfSubscriber = perfDir === undefined ? undefined : await startPerf(pids[1] as number, join(perfDir, 'sub-1.data'))
  const results = await syncs
  await perfServe?.stop()
  await perfSubscriber?.stop()
  const t1 = performance.now()
  const cpuAfter = pids.map(cpuOf)
  const tcp = meter?.stop()
  const statusAfter: AgentStatus[] = await Promise.all(all.map(async s => await (await api(s)).status()))
  const d = (i: number, k: keyof AgentStatus['counters']): number => (statusAfter[i] as AgentStatus).counters[k] - (statusBefore[i] as AgentStatus).counters[k]
  const tcpOf = (i: number): { received: number, sent: number } | undefined => tcp?.perPid.get(pids[i] as number)
  const cpuDelta = (i: number): number => (cpuAfter[i] as Cpu).self - (cpuBefore[i] as Cpu).self
  return {
    publishSeconds: (tPublished - t0) / 1000,
    phases,
    wallSeconds: (t1 - t0) / 1000,
    publishCpu: cpuPublished.self - (cpuBefore[0] as Cpu).self,
    serveCpu: (cpuAfter[0] as Cpu).self - cpuPublished.self,
    publisherRssMiB: peakRssMiB(pids[0] as number),
    subscriberCpu: subs.reduce((n, _s, i) => n + cpuDelta(i + 1), 0),
    publish: published,
    results,
    subs: subs.map((_s, j) => ({ framesDown: d(j + 1, 'bytesDown'), framesUp: d(j + 1, 'bytesUp'), chunkDown: d(j + 1, 'chunkBytesDown'), tcpDown: tcpOf(j + 1)?.received, tcpUp: tcpOf(j + 1)?.sent })),
    pub: { framesUp: d(0, 'bytesUp'), framesDown: d(0, 'bytesDown'), chunkUp: d(0, 'chunkBytesUp'), tcpUp: tcpOf(0)?.sent, tcpDown: tcpOf(0)?.received },
    tcpAllReceived: tcp === undefined ? undefined : [...tcp.perPid.values()].reduce((n, v) => n + v.received, 0),
    framesAllDown: all.reduce((n, _s, i) => n + d(i, 'bytesDown'), 0),
    tcp: tcp === undefined ? undefined : { closed: tcp.closed, opened: tcp.opened },
  }
}

export interface ChunkingFloor { files: number, bytes: number, cpuSeconds: number }

/**
 * The least a publish of v2 can cost: every changed file read, cut and SHA-256 hashed once (the page cache is
 * warm, as for the publisher). Measured in this process with the agent's own chunker, best of 3.
 */
export async function chunkingFloor (root: string, paths: string[]): Promise<ChunkingFloor> {
  let best = Number.POSITIVE_INFINITY
  let bytes = 0
  for (let round = 0; round < 3; round++) {
    bytes = 0
    const c0 = process.cpuUsage()
    for (const rel of paths) for (const c of await chunkFile(join(root, rel), DEFAULT_CHUNKING)) bytes += c.size
    const used = process.cpuUsage(c0)
    best = Math.min(best, (used.user + used.system) / 1e6)
  }
  return { files: paths.length, bytes, cpuSeconds: best }
}
