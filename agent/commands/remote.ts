// Commands that run the agent or talk to a running one over its control socket: agent, peers, trust,
// subscribe, unsubscribe, sync, status. peers add and trust also work before the agent runs (they edit
// config.toml); the others need the agent and say how to start it.

import { readFile, rm, writeFile } from 'node:fs/promises'
import { InvalidArgumentError, type Command } from 'commander'
import { resolveHome } from '../core/home.js'
import { appendPeer, appendTrust, loadConfig } from '../core/config.js'
import { createLogger } from '../core/log.js'
import { prepareSocketPath, startControlServer, type ControlServer } from '../control/server.js'
import { connectAgent } from '../control/client.js'
import { AgentNotRunningError } from '../control/errors.js'
import type { AgentApi, AgentStatus, LinkStatus, SyncProgress } from '../api/api.js'
import { formatRate } from '../core/rate.js'
import { ExitError, formatBytes, homeOption } from './common.js'
import { createProgressReporter, formatDuration, formatProgressLine, formatSyncSummary } from './progress.js'
import { FilterPatternError, validateFilter } from '../versions/filter.js'
import { DEFAULT_MAX_DROP_PERCENT, parseMaxDrop } from '../versions/selection-guard.js'
import { restoreYoungGenerationGrowth } from '../core/heap.js'
import { checkPeerAddress } from '../net/peer-address.js'
import { loadOrCreatePeerKey } from '../net/peer-key.js'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'

/** Exit code of `sync` when --timeout expires (1 is any other failure). */
export const EXIT_SYNC_TIMEOUT = 3
/** Exit code when a second SIGINT/SIGTERM arrives while the agent is stopping (or syncing is interrupted). */
export const EXIT_INTERRUPTED = 130

/** Runs fn against the agent running on this home; undefined (fn not called) when no agent runs. */
export async function viaAgent<T> (homeArg: string | undefined, fn: (api: AgentApi) => Promise<T>): Promise<T | undefined> {
  const api = await connectAgent(resolveHome(homeArg))
  return api === undefined ? undefined : await fn(api)
}

/** The running agent, or exit 1 with how to start it. */
async function requireAgent (homeArg: string | undefined): Promise<AgentApi> {
  const home = resolveHome(homeArg)
  const api = await connectAgent(home)
  if (api === undefined) throw new ExitError(new AgentNotRunningError(home.controlSocket, home.root).message, 1)
  return api
}

// One function per command; `deltamesh --help` lists them in this order.
export function registerRemoteCommands (program: Command): void {
  registerAgent(program)
  registerPeers(program)
  registerTrust(program)
  registerSubscribe(program)
  registerUnsubscribe(program)
  registerSync(program)
  registerLimit(program)
  registerStatus(program)
}

function registerAgent (program: Command): void {
  program.command('agent')
    .description('run the agent in the foreground: talk to peers, serve and fetch chunks, follow subscriptions, answer the CLI on HOME/control.sock; stops cleanly on SIGTERM/SIGINT')
    .addOption(homeOption())
    .action(async (opts: { home?: string }) => { await runAgent(opts.home) })
}

function registerPeers (program: Command): void {
  const peers = program.command('peers').description('list or add the peers this agent dials')
  peers.command('add')
    .description('add a peer (multiaddr ending in /p2p/<peer id>, printed by `deltamesh init` on that site): told to the running agent, or written to config.toml when the agent is not running')
    .addOption(homeOption())
    .option('--name <name>', 'a short name for the peer, shown by status')
    .argument('<multiaddr>', 'e.g. /ip4/192.0.2.7/tcp/4101/p2p/12D3KooW…')
    .action(async (addr: string, opts: { home?: string, name?: string }) => {
      const viaRunning = await viaAgent(opts.home, async api => { await api.addPeer(addr, opts.name); return true })
      if (viaRunning === true) { process.stdout.write(`added peer ${addr} to the running agent\n`); return }
      const home = resolveHome(opts.home)
      const config = await loadConfig(home.config)
      const selfId = peerIdFromPrivateKey(await loadOrCreatePeerKey(home.peerKey)).toString()
      checkPeerAddress(addr, selfId, config.peers)
      await appendPeer(home.config, addr, opts.name)
      process.stdout.write(`added peer ${addr} to ${home.config} (the agent dials it when started)\n`)
    })
  peers.command('list')
    .description('list peers: live connection state and traffic from the running agent, else the configured peers')
    .addOption(homeOption())
    .option('--json', 'print the peers as JSON')
    .action(async (opts: { home?: string, json?: boolean }) => {
      const status = await viaAgent(opts.home, async api => await api.status())
      if (status !== undefined) {
        if (opts.json === true) process.stdout.write(JSON.stringify(status.peers) + '\n')
        else process.stdout.write(status.peers.length === 0 ? 'no peers\n' : formatPeers(status) + '\n')
        return
      }
      const home = resolveHome(opts.home)
      const config = await loadConfig(home.config)
      if (opts.json === true) { process.stdout.write(JSON.stringify(config.peers) + '\n'); return }
      process.stdout.write(`agent not running; configured peers in ${home.config}:\n` +
        (config.peers.length === 0 ? '  (none)\n' : table([['NAME', 'ADDRESS'], ...config.peers.map(p => [p.name ?? '-', p.addr])]) + '\n'))
    })
}

function registerTrust (program: Command): void {
  program.command('trust')
    .description('accept versions of TREE signed by PUBKEY (printed by `deltamesh init` on the publishing site): told to the running agent, or written to config.toml when the agent is not running')
    .addOption(homeOption())
    .argument('<tree>', 'tree name, e.g. rhel-10/compose/BaseOS')
    .argument('<pubkey>', "publisher key 'ed25519:…'")
    .action(async (tree: string, key: string, opts: { home?: string }) => {
      const viaRunning = await viaAgent(opts.home, async api => { await api.trust(tree, key); return true })
      if (viaRunning === true) { process.stdout.write(`trusting ${key} for ${tree} (running agent)\n`); return }
      const home = resolveHome(opts.home)
      await appendTrust(home.config, tree, key)
      process.stdout.write(`trusting ${key} for ${tree} (written to ${home.config})\n`)
    })
}

function registerSubscribe (program: Command): void {
  program.command('subscribe')
    .description('keep a copy of TREE at PATH: the agent pulls each new trusted version and switches PATH to it atomically (needs the running agent)')
    .addOption(homeOption())
    .argument('<tree>', 'tree name')
    .requiredOption('--to <path>', 'where the tree appears (a symlink to the current version)')
    .option('--include <glob...>', "only these paths: globs from the tree root ('Packages/x86_64/**'); a trailing / takes a directory and everything under it ('Packages/x86_64/'); a name without / matches at any depth ('*.iso', 'debug/'); a leading / anchors it at the root")
    .option('--exclude <glob...>', 'skip these paths (the same patterns; exclude wins over include)')
    .option('--allow-empty', 'install a version even when the filter selects none of its files (default: such a version is refused and the previous one stays served)')
    .option('--max-drop <percent>', `refuse a version that selects more than this share fewer files than the version served (default ${DEFAULT_MAX_DROP_PERCENT}%; 100% never refuses)`, parseMaxDropOption)
    .option('--seed <dir>', 'an existing copy of the tree (an rsync mirror, a shipped disk): the first version takes every file there whose bytes match it instead of fetching it — hardlinked, so do not edit the seed in place afterwards')
    .option('--seed-copy', 'copy the seed\'s files instead of hardlinking them')
    .action(async (tree: string, opts: { home?: string, to: string, include?: string[], exclude?: string[], seed?: string, seedCopy?: boolean, allowEmpty?: boolean, maxDrop?: number }) => {
      try {
        validateFilter({ include: opts.include, exclude: opts.exclude })
      } catch (err) {
        if (err instanceof FilterPatternError) throw new ExitError(err.message, 2)
        throw err
      }
      const api = await requireAgent(opts.home)
      await api.subscribe({ tree, to: opts.to, include: opts.include, exclude: opts.exclude, seed: opts.seed, seedCopy: opts.seedCopy, allowEmpty: opts.allowEmpty, maxDropPercent: opts.maxDrop })
      // a version already held under other patterns is rebuilt with these and flipped to: `sync` waits for that too
      process.stdout.write(`subscribed ${tree} at ${opts.to}; wait for it with: deltamesh sync ${tree}\n`)
    })
}

function registerUnsubscribe (program: Command): void {
  program.command('unsubscribe')
    .description('stop following TREE (needs the running agent)')
    .addOption(homeOption())
    .argument('<tree>', 'tree name')
    .action(async (tree: string, opts: { home?: string }) => {
      const api = await requireAgent(opts.home)
      await api.unsubscribe(tree)
      process.stdout.write(`unsubscribed ${tree}\n`)
    })
}

function registerSync (program: Command): void {
  program.command('sync')
    .description(`wait until the agent holds the newest announced version of TREE, showing progress; exit 0 when complete, ${EXIT_SYNC_TIMEOUT} on --timeout, 1 when the sync fails or no agent runs`)
    .addOption(homeOption())
    .argument('<tree>', 'tree name')
    .option('--timeout <seconds>', 'give up after this many seconds', parsePositiveSeconds)
    .option('--seq <n>', 'wait for at least this version (e.g. the seq `publish` printed, before its announcement arrives)', v => Number.parseInt(v, 10))
    .action(async (tree: string, opts: { home?: string, timeout?: number, seq?: number }) => {
      await runSync(await requireAgent(opts.home), tree, opts.timeout, opts.seq)
    })
}

function registerLimit (program: Command): void {
  program.command('limit')
    .description('show or change bandwidth limits at runtime: global (no --link/--peer), a named [[links]] entry, or one peer; effective within a second, kept across restarts in HOME/limits.json (over config.toml) until --reset. With --tree and --weight: a tree\'s share of busy links')
    .addOption(homeOption())
    .option('--link <name>', 'a link from [[links]] in config.toml')
    .option('--peer <peer id>', 'one peer (that is in no named link)')
    .option('--up <rate>', "what we send, e.g. 10MB/s, 80Mbit/s, 'unlimited'")
    .option('--down <rate>', 'what we ask of peers')
    .option('--reset', 'drop runtime limits of the target: back to config.toml and its schedule')
    .option('--tree <tree>', 'with --weight: set this tree\'s weight')
    .option('--weight <n|reset>', 'share of a busy link relative to other trees (default 1)')
    .option('--json', 'print the links as JSON')
    .action(async (opts: LimitOptions) => { await runLimit(opts) })
}

function registerStatus (program: Command): void {
  program.command('status')
    .description('what the running agent holds and does: trees (current and newest version, subscription, sync progress), versions, peers and traffic, counters')
    .addOption(homeOption())
    .option('--json', 'print the AgentStatus as JSON')
    .action(async (opts: { home?: string, json?: boolean }) => {
      const status = await (await requireAgent(opts.home)).status()
      process.stdout.write(opts.json === true ? JSON.stringify(status) + '\n' : formatStatus(status))
    })
}

interface LimitOptions { home?: string, link?: string, peer?: string, up?: string, down?: string, reset?: boolean, tree?: string, weight?: string, json?: boolean }

async function runLimit (opts: LimitOptions): Promise<void> {
  if ((opts.tree === undefined) !== (opts.weight === undefined)) throw new ExitError('--tree and --weight go together', 2)
  const weight = opts.weight === undefined || opts.weight === 'reset' ? undefined : Number(opts.weight)
  if (weight !== undefined && !(weight > 0 && weight <= 1000)) throw new ExitError(`--weight: expected a number in (0, 1000] or 'reset', not ${opts.weight ?? ''}`, 2)
  const changing = opts.up !== undefined || opts.down !== undefined || opts.reset === true
  const request = { link: opts.link, peer: opts.peer, up: opts.up, down: opts.down, reset: opts.reset }
  const print = (links: LinkStatus[], note: string): void => {
    if (opts.json === true) { process.stdout.write(JSON.stringify(links) + '\n'); return }
    process.stdout.write((note === '' ? '' : note + '\n') + formatLinks(links) + '\n')
  }
  const running = await viaAgent(opts.home, async api => {
    if (opts.tree !== undefined) process.stdout.write(`${opts.tree}: weight ${await api.setTreeWeight(opts.tree, weight)}\n`)
    const changed = changing ? await api.setLimit(request) : undefined
    const links = (await api.status()).links
    print(changed === undefined ? links : [changed], changed === undefined ? '' : 'in force now (running agent):')
    return true
  })
  if (running === true) return
  // No agent: edit limits.json by the agent's own rules; it applies them when it starts.
  const home = resolveHome(opts.home)
  const { bandwidthFromConfig } = await import('../bandwidth/from-config.js')
  const bandwidth = await bandwidthFromConfig(await loadConfig(home.config), home, { tickMs: 0 })
  try {
    if (opts.tree !== undefined) process.stdout.write(`${opts.tree}: weight ${await bandwidth.setTreeWeight(opts.tree, weight)}\n`)
    if (changing) print([await bandwidth.change(request)], `agent not running; written to ${home.limitOverrides}:`)
    else print(bandwidth.status(), 'agent not running; limits from config.toml and limits.json:')
  } finally {
    bandwidth.close()
  }
}

function parseMaxDropOption (v: string): number {
  try {
    return parseMaxDrop(v)
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message.replace(/^--max-drop: /, ''))
  }
}

function parsePositiveSeconds (v: string): number {
  const n = Number(v)
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a positive number of seconds')
  return n
}

async function runSync (api: AgentApi, tree: string, timeoutS: number | undefined, minSeq?: number): Promise<void> {
  const reporter = createProgressReporter()
  const interrupted = new AbortController()
  const onInterrupt = (): void => { interrupted.abort() }
  process.once('SIGINT', onInterrupt) // stop the bar (and give the cursor back) before exiting
  const timeout = timeoutS === undefined ? undefined : AbortSignal.timeout(timeoutS * 1000)
  const signal = timeout === undefined ? interrupted.signal : AbortSignal.any([timeout, interrupted.signal])
  try {
    const result = await api.waitForSync(tree, { signal, minSeq, onProgress: p => { reporter.update(p) } })
    reporter.stop()
    process.stdout.write(formatSyncSummary(result) + '\n')
  } catch (err) {
    reporter.stop()
    if (timeout?.aborted === true) throw new ExitError(`sync ${tree}: timed out after ${timeoutS} s ${where(reporter.last)}`, EXIT_SYNC_TIMEOUT)
    if (interrupted.signal.aborted) throw new ExitError(`sync ${tree}: interrupted ${where(reporter.last)}`, EXIT_INTERRUPTED)
    const error = err as Error
    throw new ExitError(`sync ${tree} failed: ${error.name !== 'Error' ? `${error.name}: ` : ''}${error.message}`, 1)
  } finally {
    process.removeListener('SIGINT', onInterrupt)
  }
}

function where (p: SyncProgress | undefined): string {
  if (p === undefined || p.phase === 'waiting') return 'waiting for a version to be announced'
  return `at ${formatBytes(p.bytesDone)} of ${formatBytes(p.bytesTotal)} (${p.tree}@${p.seq}, ${p.phase})`
}

/** `deltamesh agent`: start, serve the control API, and stop cleanly on a signal or a shutdown request. */
async function runAgent (homeArg: string | undefined): Promise<void> {
  const home = resolveHome(homeArg)
  const log = createLogger()
  // Before opening anything: a second agent on this home gets "already running (pid …)", not a LevelDB lock error.
  await prepareSocketPath(home.controlSocket)

  let phase: 'starting' | 'running' | 'stopping' = 'starting'
  let requested: string | undefined
  // Loaded here, not at the top: only this command needs libp2p and the store, and the others start faster.
  const { startAgent } = await import('../daemon/agent.js')
  let agent: Awaited<ReturnType<typeof startAgent>> | undefined
  let server: ControlServer | undefined
  let settle: { resolve: () => void, reject: (err: unknown) => void } = { resolve: () => {}, reject: () => {} }
  const stopped = new Promise<void>((resolve, reject) => { settle = { resolve, reject } })

  const cleanUp = async (): Promise<void> => {
    await server?.close()
    await agent?.stop()
    await removePidFile(home.pidFile)
    await rm(home.controlSocket, { force: true })
  }
  const stop = (reason: string): void => {
    if (phase === 'starting') { requested ??= reason; return }
    if (phase === 'stopping') return
    phase = 'stopping'
    log.info({ reason }, 'agent stopping')
    cleanUp().then(settle.resolve, settle.reject)
  }
  const onSignal = (signal: NodeJS.Signals): void => {
    if (phase === 'stopping' || requested !== undefined) {
      process.stderr.write(`deltamesh: ${signal} again while stopping, exiting now\n`)
      process.exit(EXIT_INTERRUPTED)
    }
    stop(signal)
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)

  try {
    agent = await startAgent({ home, log })
    server = await startControlServer({ socketPath: home.controlSocket, api: agent.api, log, onShutdown: () => { stop('shutdown requested') } })
    await writeFile(home.pidFile, `${process.pid}\n`, { mode: 0o600 })
    // start-up is over: from now on the young generation grows with real work only (core/heap.ts)
    restoreYoungGenerationGrowth()
  } catch (err) {
    process.removeListener('SIGTERM', onSignal)
    process.removeListener('SIGINT', onSignal)
    await cleanUp().catch((cleanupErr: unknown) => { log.error({ err: cleanupErr }, 'cleanup after a failed start failed') })
    log.flush()
    throw err
  }
  phase = 'running'
  log.info({ socket: home.controlSocket, pid: process.pid, home: home.root }, 'agent running')
  if (requested !== undefined) stop(requested)

  try {
    await stopped
  } catch (err) {
    log.error({ err }, 'agent did not stop cleanly')
    log.flush()
    process.exit(1)
  }
  log.info('agent stopped')
  log.flush()
  // libp2p and friends may leave unref'd-but-pending handles; the agent is stopped, so leave now.
  process.exit(0)
}

/** Removes the pid file only if it is still ours. */
async function removePidFile (file: string): Promise<void> {
  const text = await readFile(file, 'utf8').catch(() => '')
  if (text.trim() === String(process.pid)) await rm(file, { force: true })
}

// Human-readable status.

/** [[publish]] sources watched: what each is doing, and its last publish. */
function formatWatches (watches: NonNullable<AgentStatus['watches']>, now: number): string {
  return table([['PUBLISH ON CHANGE', 'SOURCE', 'STATE', 'LAST PUBLISH'], ...watches.map(w => {
    const state = w.phase === 'pending' && w.dueAtMs !== undefined ? `pending (publish in ${formatDuration(Math.max(0, w.dueAtMs - now) / 1000)})` : w.phase
    const last = w.last === undefined ? '-' : `${w.last.error !== undefined ? `failed: ${w.last.error}` : w.last.unchanged === true ? `v${w.last.seq ?? '?'} unchanged` : `v${w.last.seq ?? '?'}`} ${formatDuration((now - w.last.atMs) / 1000)} ago`
    return [w.tree, `${w.src} (${w.dirs} dirs${w.watchError === undefined ? '' : `; ${w.watchError}`})`, state, last]
  })])
}

function formatStatus (s: AgentStatus): string {
  const now = Date.now()
  const out: string[] = [
    `agent ${s.peerId} (deltamesh ${s.version}), up ${formatDuration((now - s.startedAtMs) / 1000)}`,
    `listening:     ${s.multiaddrs.length === 0 ? '-' : s.multiaddrs.join(' ')}`,
    `publisher key: ${s.publisherKey}`,
    `dashboard:     ${s.dashboard?.url ?? 'off ([dashboard] enabled = false)'}`,
    ...(s.mirrors === undefined ? [] : [`metalinks:     ${s.mirrors.url}metalink?tree=T&path=P, ${s.mirrors.url}mirrorlist?tree=T`]),
    `traffic:       up ${formatBytes(s.counters.bytesUp)}, down ${formatBytes(s.counters.bytesDown)}; ` +
      `rejected: ${s.counters.envelopesRejected} envelopes${byReason(s.envelopeRejections)}, ${s.counters.chunksRejected} chunks`,
    '',
  ]
  if (s.trees.length === 0) out.push('no trees')
  else {
    out.push(table([['TREE', 'CURRENT', 'NEWEST', 'SUBSCRIBED AT', 'SYNC'], ...s.trees.map(t => [
      t.name, t.currentSeq?.toString() ?? '-', t.newestSeq?.toString() ?? '-',
      t.subscribedTo === undefined ? '-' : t.subscribedTo + filtersOf(t.include, t.exclude, t),
      t.sync === undefined ? (t.currentSeq !== undefined && t.currentSeq === t.newestSeq ? 'up to date' : '-') : formatProgressLine(t.sync).replace(/^sync /, ''),
    ])]))
    const versions = s.trees.flatMap(t => t.versions.map(v => [
      `${t.name}@${v.seq}`, v.state, v.label === '' ? '-' : v.label, v.bytes === undefined ? '-' : formatBytes(v.bytes),
      v.files?.toString() ?? '-', v.newBytes === undefined ? '-' : formatBytes(v.newBytes), new Date(v.createdAtMs).toISOString().replace(/\.\d+Z$/, 'Z'),
    ]))
    if (versions.length > 0) out.push('', table([['VERSION', 'STATE', 'LABEL', 'SIZE', 'FILES', 'NEW', 'CREATED'], ...versions]))
    const serves = s.trees.flatMap(t => (t.serves ?? []).map(v => [t.name, v.url, v.location ?? '-', String(v.preference), v.listed ? 'yes' : 'no: filtered subscription']))
    if (serves.length > 0) out.push('', table([['SERVED TREE', 'URL', 'LOCATION', 'PREFERENCE', 'IN METALINKS'], ...serves]))
  }
  if ((s.watches ?? []).length > 0) out.push('', formatWatches(s.watches ?? [], now))
  out.push('', s.peers.length === 0 ? 'no peers' : formatPeers(s))
  const links = s.links.filter(l => l.kind !== 'peer' || l.limit.up !== null || l.limit.down !== null || l.queue.length > 0)
  if (links.length > 0) out.push('', formatLinks(links))
  const weights = Object.entries(s.treeWeights)
  if (weights.length > 0) out.push('', `tree weights: ${weights.map(([t, w]) => `${t}=${w}`).join(', ')}`)
  return out.join('\n') + '\n'
}

/** ' (replay 1, bad-signature 2)': the non-zero reasons only. */
function byReason (counts: Record<string, number> | undefined): string {
  const parts = Object.entries(counts ?? {}).filter(([, n]) => n > 0).map(([reason, n]) => `${reason} ${n}`)
  return parts.length === 0 ? '' : ` (${parts.join(', ')})`
}

function filtersOf (include: string[] | undefined, exclude: string[] | undefined, t?: { allowEmpty?: boolean, maxDropPercent?: number }): string {
  const parts = [...(include ?? []).map(g => `+${g}`), ...(exclude ?? []).map(g => `-${g}`)]
  if (t?.allowEmpty === true) parts.push('allow-empty')
  if (t?.maxDropPercent !== undefined) parts.push(`max-drop ${t.maxDropPercent}%`)
  return parts.length === 0 ? '' : ` (${parts.join(' ')})`
}

function formatPeers (s: AgentStatus): string {
  const now = Date.now()
  return table([['PEER', 'NAME', 'STATE', 'UP', 'DOWN', 'CHUNKS UP/DOWN', 'BAD', 'STRIKES'], ...s.peers.map(p => [
    p.peerId, p.name ?? '-',
    p.bannedUntilMs !== undefined && p.bannedUntilMs > now ? `banned ${formatDuration((p.bannedUntilMs - now) / 1000)}` : p.connected ? 'connected' : 'disconnected',
    formatBytes(p.bytesUp), formatBytes(p.bytesDown), `${p.chunksUp}/${p.chunksDown}`, String(p.badChunks), String(p.strikes),
  ])])
}

function formatLinks (links: LinkStatus[]): string {
  const limit = (n: number | null): string => n === null ? 'unlimited' : formatRate(n)
  const source = (l: LinkStatus): string => {
    const parts: string[] = []
    if (l.override !== undefined) parts.push(`runtime ${Object.entries(l.override).map(([d, r]) => `${d} ${r}`).join(', ')}`)
    if (l.window !== undefined) parts.push(`window ${l.window}`)
    return parts.length === 0 ? 'config' : parts.join('; ')
  }
  const queue = (l: LinkStatus): string => l.queue.length === 0
    ? '-'
    : l.queue.map(q => `${q.direction === 'up' ? '↑' : '↓'}${q.flow.length > 24 ? q.flow.slice(0, 12) + '…' + q.flow.slice(-8) : q.flow}:${formatBytes(q.bytes)}${q.weight === 1 ? '' : `×${q.weight}`}`).join(' ')
  return table([['LINK', 'LIMIT UP', 'LIMIT DOWN', 'RATE UP', 'RATE DOWN', 'SOURCE', 'QUEUED'], ...links.map(l => [
    l.kind === 'global' ? 'global' : l.kind === 'link' ? `${l.name} (${l.peers.length} peer${l.peers.length === 1 ? '' : 's'})` : `peer ${l.name}`,
    limit(l.limit.up), limit(l.limit.down), `${formatRate(l.rate.up)}`, `${formatRate(l.rate.down)}`, source(l), queue(l),
  ])])
}

/** Left-aligned columns separated by two spaces; the last column is not padded. */
export function table (rows: string[][]): string {
  const widths: number[] = []
  for (const row of rows) row.forEach((cell, i) => { widths[i] = Math.max(widths[i] ?? 0, cell.length) })
  return rows.map(row => row.map((cell, i) => i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)).join('  ')).join('\n')
}
