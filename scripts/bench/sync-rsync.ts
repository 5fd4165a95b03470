// bench:sync's rsync side: rsync from Debian (scripts/setup-debian.sh installs it when missing), and a round of
// concurrent `rsync --stats` clients against the daemon (started by incumbents.ts) with each client's figures.
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { statNumber, type RsyncDaemon } from './incumbents.js'
import { childrenOf, cpuOf, run, sleep } from './proc.js'

function hasRsync (): boolean {
  return spawnSync('rsync', ['--version'], { stdio: 'ignore' }).status === 0
}

export function rsyncVersion (): string {
  const r = spawnSync('rsync', ['--version'], { encoding: 'utf8' })
  return /rsync\s+version\s+(\S+)/.exec(r.stdout)?.[1] ?? '?'
}

/** Installs rsync with scripts/setup-debian.sh of `repo` when it is missing. */
export async function ensureRsync (repo: string): Promise<void> {
  if (hasRsync()) return
  const script = join(repo, 'scripts', 'setup-debian.sh')
  console.log(`rsync is not installed; running ${script} …`)
  const r = spawnSync('sh', [script], { stdio: 'inherit' })
  if (r.status !== 0 || !hasRsync()) throw new Error(`rsync is needed for this benchmark: run ${script} (as root or with sudo), or install rsync`)
}

export interface RsyncClient { sent: number, received: number, literal: number, matched: number, transferred: number, seconds: number }

export interface RsyncClientsRound { label: string, clients: RsyncClient[], wallSeconds: number, daemonCpu: number, clientCpu: number }

/** 4 concurrent `rsync -a --delete --stats [-z] rsync://…/bench/ dest/`; daemon CPU = its own + its reaped children's. */
export async function rsyncClientsRound (label: string, daemon: RsyncDaemon, dests: string[], extra: string[]): Promise<RsyncClientsRound> {
  const before = cpuOf(daemon.pid)
  const selfBefore = cpuOf(process.pid)
  const t0 = performance.now()
  const clients = await Promise.all(dests.map(async dest => {
    const c0 = performance.now()
    const r = await run('rsync', ['-a', '--delete', '--stats', ...extra, `rsync://127.0.0.1:${daemon.port}/bench/`, `${dest}/`])
    const seconds = (performance.now() - c0) / 1000
    if (r.code !== 0) throw new Error(`rsync ${extra.join(' ')} to ${dest} exited ${r.code}: ${r.stderr}`)
    return {
      sent: statNumber(r.stdout, 'Total bytes sent'), received: statNumber(r.stdout, 'Total bytes received'),
      literal: statNumber(r.stdout, 'Literal data'), matched: statNumber(r.stdout, 'Matched data'),
      transferred: statNumber(r.stdout, 'Number of regular files transferred'), seconds,
    }
  }))
  const wallSeconds = (performance.now() - t0) / 1000
  // the daemon reaps its per-connection children on SIGCHLD; their CPU lands in its cutime/cstime then
  const deadline = Date.now() + 10_000
  while (childrenOf(daemon.pid).length > 0 && Date.now() < deadline) await sleep(50)
  if (childrenOf(daemon.pid).length > 0) throw new Error('rsync daemon children did not exit')
  await sleep(100)
  const after = cpuOf(daemon.pid)
  const selfAfter = cpuOf(process.pid)
  return {
    label, clients, wallSeconds,
    daemonCpu: (after.self + after.children) - (before.self + before.children),
    // rsync clients are this process's children (reaped by node): their CPU, with their own forks', is in our cutime
    clientCpu: selfAfter.children - selfBefore.children,
  }
}
