// Commands that run the agent or talk to a running one over its control socket: agent, peers, trust,
// subscribe, unsubscribe, sync, status. peers add and trust also work before the agent runs (they edit
// config.toml); the others need the agent and say how to start it.

import { readFile, rm, writeFile } from 'node:fs/promises'
import { InvalidArgumentError, type Command } from 'commander'
import { resolveHome } from '../core/home.js'
import { appendTrust, loadConfig } from '../core/config.js'
import { createLogger } from '../core/log.js'
import { prepareSocketPath, startControlServer, type ControlServer } from '../control/server.js'
import { connectAgent } from '../control/client.js'
import { AgentNotRunningError } from '../control/errors.js'
import type { AgentApi, LinkStatus, SyncProgress } from '../api/api.js'
import { ExitError, formatBytes, homeOption, viaAgent } from './common.js'

export { viaAgent }
import { createProgressReporter, formatSyncSummary } from './progress.js'
import { FilterPatternError, validateFilter } from '../versions/filter.js'
import { DEFAULT_MAX_DROP_PERCENT, parseMaxDrop } from '../versions/selection-guard.js'
import { restoreYoungGenerationGrowth } from '../core/heap.js'
import { addHookOptions, hookRequest, type HookOptions } from './react.js'
import { registerPeers } from './peers.js'
import { resolvePeerRef } from '../net/peer-address.js'
import { formatLinks, formatStatus } from './format-status.js'

/** Exit code of `sync` when --timeout expires (1 is any other failure). */
export const EXIT_SYNC_TIMEOUT = 3
/** Exit code when a second SIGINT/SIGTERM arrives while the agent is stopping (or syncing is interrupted). */
export const EXIT_INTERRUPTED = 130

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
  addHookOptions(program.command('subscribe'))
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
    .action(async (tree: string, opts: HookOptions & { home?: string, to: string, include?: string[], exclude?: string[], seed?: string, seedCopy?: boolean, allowEmpty?: boolean, maxDrop?: number }) => {
      try {
        validateFilter({ include: opts.include, exclude: opts.exclude })
      } catch (err) {
        if (err instanceof FilterPatternError) throw new ExitError(err.message, 2)
        throw err
      }
      const hooks = hookRequest(opts)
      const api = await requireAgent(opts.home)
      await api.subscribe({ tree, to: opts.to, include: opts.include, exclude: opts.exclude, seed: opts.seed, seedCopy: opts.seedCopy, allowEmpty: opts.allowEmpty, maxDropPercent: opts.maxDrop, ...hooks })
      // a version already held under other patterns is rebuilt with these and flipped to: `sync` waits for that too
      const home = homeArg(opts.home)
      process.stdout.write(`subscribed ${tree} at ${opts.to}; wait for it with: deltamesh sync${home} ${tree}\n`)
      // the agent refuses every version of a tree until a publisher key is trusted for it: say so now, not at a timeout
      const status = (await api.status()).trees.find(t => t.name === tree)
      if (status !== undefined && status.trustedKeys.length === 0) {
        process.stderr.write(`warning: no publisher key is trusted for ${tree} here: its versions are refused until you run deltamesh trust${home} ${tree} <publisher key> (printed by \`deltamesh init\` on the publishing site)\n`)
      }
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
    .description(`wait until the agent holds the newest announced version of TREE, showing progress; exit 0 when complete, ${EXIT_SYNC_TIMEOUT} on --timeout (saying why it waited, when it knows), 2 when the version held is known damaged (run verify --repair), 1 when the sync fails or no agent runs`)
    .addOption(homeOption())
    .argument('<tree>', 'tree name')
    .option('--timeout <seconds>', 'give up after this many seconds', parsePositiveSeconds)
    .option('--seq <n>', 'wait for at least this version (e.g. the seq `publish` printed, before its announcement arrives)', v => Number.parseInt(v, 10))
    .action(async (tree: string, opts: { home?: string, timeout?: number, seq?: number }) => {
      await runSync(await requireAgent(opts.home), opts.home, tree, opts.timeout, opts.seq)
    })
}

function registerLimit (program: Command): void {
  program.command('limit')
    .description('show or change bandwidth limits at runtime: global (no --link/--peer), a named [[links]] entry, or one peer; effective within a second, kept across restarts in HOME/limits.json (over config.toml) until --reset. With --tree and --weight: a tree\'s share of busy links')
    .addOption(homeOption())
    .option('--link <name>', 'a link from [[links]] in config.toml')
    .option('--peer <peer>', 'one peer (that is in no named link): its [[peers]] name or its peer id, as [[links]] takes them')
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
  const home = resolveHome(opts.home)
  const request = { link: opts.link, peer: opts.peer === undefined ? undefined : peerIdOf(opts.peer, (await loadConfig(home.config)).peers), up: opts.up, down: opts.down, reset: opts.reset }
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

/** ' --home DIR' as typed again (empty when $DELTAMESH_HOME gave it). */
function homeArg (home: string | undefined): string {
  return home === undefined ? '' : ` --home ${shellWord(home)}`
}

/** A path as one shell word: quoted only when it needs to be. */
function shellWord (s: string): string {
  return /^[A-Za-z0-9_./:@%+,=-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`
}

/** `--peer`: a [[peers]] name or a peer id (one not listed is passed on: the agent says what it makes of it). */
function peerIdOf (ref: string, listed: Array<{ addr: string, name?: string }>): string {
  try {
    return resolvePeerRef(ref, listed).peerId
  } catch (err) {
    if (/^(12D3Koo|Qm)[1-9A-HJ-NP-Za-km-z]+$/.test(ref)) return ref
    throw new ExitError(`--peer: ${(err as Error).message}`, 2)
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

async function runSync (api: AgentApi, home: string | undefined, tree: string, timeoutS: number | undefined, minSeq?: number): Promise<void> {
  const reporter = createProgressReporter()
  const interrupted = new AbortController()
  const onInterrupt = (): void => { interrupted.abort() }
  process.once('SIGINT', onInterrupt) // stop the bar (and give the cursor back) before exiting
  const timeout = timeoutS === undefined ? undefined : AbortSignal.timeout(timeoutS * 1000)
  const signal = timeout === undefined ? interrupted.signal : AbortSignal.any([timeout, interrupted.signal])
  try {
    // bytes fetched per version this command watched (see formatSyncSummary)
    const seen = new Map<number, number>()
    const result = await api.waitForSync(tree, { signal, minSeq, onProgress: p => { seen.set(p.seq, Math.max(seen.get(p.seq) ?? 0, p.bytesDone)); reporter.update(p) } })
    reporter.stop()
    if (result.damaged !== undefined) throw new ExitError(`sync ${tree}: ${result.damaged.replace(' --home DIR', homeArg(home))}`, 2)
    process.stdout.write(formatSyncSummary(result, [...seen.values()].reduce((a, b) => a + b, 0)) + '\n')
  } catch (err) {
    reporter.stop()
    if (err instanceof ExitError) throw err
    if (timeout?.aborted === true) throw new ExitError(`sync ${tree}: timed out after ${timeoutS} s ${where(reporter.last)}`, EXIT_SYNC_TIMEOUT)
    if (interrupted.signal.aborted) throw new ExitError(`sync ${tree}: interrupted ${where(reporter.last)}`, EXIT_INTERRUPTED)
    const error = err as Error
    throw new ExitError(`sync ${tree} failed: ${error.name !== 'Error' ? `${error.name}: ` : ''}${error.message}`, 1)
  } finally {
    process.removeListener('SIGINT', onInterrupt)
  }
}

/** Where a sync was given up: how far it got, and why it was waiting if it knows. */
function where (p: SyncProgress | undefined): string {
  if (p === undefined || p.phase === 'waiting') return p?.stuck === undefined ? 'waiting for a version to be announced' : `waiting: ${p.stuck.message}`
  return `at ${formatBytes(p.bytesDone)} of ${formatBytes(p.bytesTotal)} (${p.tree}@${p.seq}, ${p.phase})${p.stuck === undefined ? '' : `; waiting: ${p.stuck.message}`}`
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
