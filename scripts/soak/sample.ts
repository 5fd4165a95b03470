// What the soak reads from each agent after each version, and the line fitted through it.
import { execFile } from 'node:child_process'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { ControlClient } from '../../agent/control/client.js'
import { HomeLayout } from '../../agent/core/home.js'

const run = promisify(execFile)

export interface Sample {
  version: number
  wallS: number
  agent: string
  pid: number
  rssMiB: number
  /** nodejs_heap_size_used_bytes of the agent's /metrics (NaN when the dashboard is off or did not answer). */
  heapMiB: number
  fds: number
  dbMiB: number
  /** `du` of the agent's home (hardlinks counted once; disk blocks, not apparent size). */
  homeMiB: number
  versionDirs: number
  stagingDirs: number
  /** Version records in the agent's catalog for the tree (status.trees[].versions). */
  catalogVersions: number
  currentSeq: number
}

export const QUANTITIES = ['rssMiB', 'heapMiB', 'fds', 'dbMiB', 'homeMiB', 'versionDirs', 'stagingDirs', 'catalogVersions'] as const
export type Quantity = typeof QUANTITIES[number]

const MIB = 1024 * 1024

async function rssMiB (pid: number): Promise<number> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '')
  const m = /^VmRSS:\s+(\d+) kB/m.exec(text)
  return m === null ? NaN : Number(m[1]) / 1024
}

async function countEntries (dir: string): Promise<number> {
  return await readdir(dir).then(names => names.length, () => 0)
}

/** Disk use in bytes (du -s -B1: blocks, each inode once), NaN when du fails. */
export async function diskUse (path: string): Promise<number> {
  try {
    const { stdout } = await run('du', ['-s', '-B1', path], { maxBuffer: 1 << 20 })
    return Number(stdout.split(/\s/)[0])
  } catch (err) {
    // du exits 1 when a file vanished under it (a version pruned meanwhile): its figure is still printed
    const out = (err as { stdout?: string }).stdout
    return out === undefined || out === '' ? NaN : Number(out.split(/\s/)[0])
  }
}

async function metrics (url: string | undefined): Promise<Map<string, number>> {
  const out = new Map<string, number>()
  if (url === undefined) return out
  try {
    const res = await fetch(new URL('/metrics', url), { signal: AbortSignal.timeout(5000) })
    for (const line of (await res.text()).split('\n')) {
      const m = /^([a-z_]+) ([-+0-9.eE]+|NaN)$/.exec(line)
      if (m !== null) out.set(m[1] as string, Number(m[2]))
    }
  } catch { /* the figure is NaN in the CSV */ }
  return out
}

export async function sampleAgent (agent: string, pid: number, home: string, tree: string, api: ControlClient, version: number, wallS: number): Promise<Sample> {
  const layout = new HomeLayout(home)
  const status = await api.status().catch(() => undefined)
  const m = await metrics(status?.dashboard?.url)
  const treeStatus = status?.trees.find(t => t.name === tree)
  return {
    version,
    wallS,
    agent,
    pid,
    rssMiB: await rssMiB(pid),
    heapMiB: (m.get('nodejs_heap_size_used_bytes') ?? NaN) / MIB,
    fds: await countEntries(`/proc/${pid}/fd`),
    dbMiB: await diskUse(layout.db) / MIB,
    homeMiB: await diskUse(layout.root) / MIB,
    versionDirs: await countEntries(layout.versionsDir(tree)),
    stagingDirs: await countEntries(join(layout.treeDir(tree), 'staging')),
    catalogVersions: treeStatus?.versions.length ?? NaN,
    currentSeq: treeStatus?.currentSeq ?? 0,
  }
}

export function toCsv (samples: Sample[]): string {
  const cols = ['version', 'wallS', 'agent', 'pid', ...QUANTITIES, 'currentSeq'] as const
  const cell = (v: number | string): string => typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(3)) : v
  return [cols.join(','), ...samples.map(s => cols.map(c => cell(s[c])).join(','))].join('\n') + '\n'
}

/**
 * Slope per version of `y` over `version`, within each process's life: every restart starts a new segment and
 * each segment is centred on its own means (a pooled within-segment fit), so the drop of RSS at a restart does
 * not hide a leak in the process that follows, nor invent one. NaN with fewer than 3 usable points.
 */
export function withinProcessSlope (samples: Sample[], y: Quantity): number {
  const segments = new Map<number, Array<[number, number]>>()
  for (const s of samples) {
    const v = s[y]
    if (!Number.isFinite(v)) continue
    const seg = segments.get(s.pid) ?? []
    seg.push([s.version, v])
    segments.set(s.pid, seg)
  }
  let sxy = 0
  let sxx = 0
  let n = 0
  for (const points of segments.values()) {
    if (points.length < 2) continue
    const mx = points.reduce((a, p) => a + p[0], 0) / points.length
    const my = points.reduce((a, p) => a + p[1], 0) / points.length
    for (const [x, v] of points) { sxy += (x - mx) * (v - my); sxx += (x - mx) ** 2; n++ }
  }
  return n < 3 || sxx === 0 ? NaN : sxy / sxx
}
