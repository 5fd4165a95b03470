// Commands for reacting to new versions (README "Reacting to new versions"): diff, accept, events, and the
// subscribe options of the gate and post-version commands.
import { InvalidArgumentError, type Command } from 'commander'
import type { AgentEvent } from '../api/events.js'
import type { DiffSummary, PathChange, SubscribeRequest, TreeStatus } from '../api/api.js'
import { CommandLineError, formatArgv, splitCommandLine } from '../core/command-line.js'
import { resolveHome } from '../core/home.js'
import { displayPath } from '../../protocol/paths.js'
import { connectAgent } from '../control/client.js'
import { AgentNotRunningError } from '../control/errors.js'
import { ExitError, homeOption, parseSeq, withLocalContext } from './common.js'
import { formatBytes } from '../core/format.js'

export function registerReactCommands (program: Command): void {
  registerDiff(program)
  registerAccept(program)
  registerEvents(program)
}

/** The subscribe options of the gate and post-version commands (added to `subscribe`). */
export function addHookOptions (command: Command): Command {
  return command
    .option('--gate <command>', 'run on each new complete version before PATH flips to it, in its directory; exit 0 lets it flip, anything else keeps the served version (one command line, split into words without a shell: quote with \' or ", write sh -c \'…\' for a shell)')
    .option('--gate-timeout <seconds>', 'the gate\'s deadline; past it the process group is killed and the version refused (default 600)', parseSeconds)
    .option('--on-version <command>', 'run after PATH flipped to a new version, in the background; versions that arrive meanwhile make it run once more, for the newest (same rule as --gate)')
    .option('--on-version-timeout <seconds>', 'the post-version command\'s deadline (default 3600)', parseSeconds)
}

export interface HookOptions { gate?: string, gateTimeout?: number, onVersion?: string, onVersionTimeout?: number }

/** The subscribe request's commands from the options (exit 2 on a command line that cannot be split). */
export function hookRequest (opts: HookOptions): Pick<SubscribeRequest, 'gate' | 'gateTimeoutMs' | 'onVersion' | 'onVersionTimeoutMs'> {
  try {
    return {
      gate: opts.gate === undefined ? undefined : splitCommandLine(opts.gate, '--gate'),
      gateTimeoutMs: opts.gateTimeout === undefined ? undefined : Math.round(opts.gateTimeout * 1000),
      onVersion: opts.onVersion === undefined ? undefined : splitCommandLine(opts.onVersion, '--on-version'),
      onVersionTimeoutMs: opts.onVersionTimeout === undefined ? undefined : Math.round(opts.onVersionTimeout * 1000),
    }
  } catch (err) {
    if (err instanceof CommandLineError) throw new ExitError(err.message, 2)
    throw err
  }
}

function parseSeconds (v: string): number {
  const n = Number(v)
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a positive number of seconds')
  return n
}

function registerDiff (program: Command): void {
  program.command('diff')
    .description('list the paths added, removed, changed and mode-changed between two versions of TREE held here, from their manifests alone (default: the version before the current one, and the current one). One line per path: KIND<tab>PATH; a summary on stderr')
    .addOption(homeOption())
    .argument('<tree>', 'tree name')
    .argument('[seqA]', 'the older version', parseSeq)
    .argument('[seqB]', 'the newer version (default: the newest held)', parseSeq)
    .option('--json', 'one JSON object per line: {"change","path","type"} for each path, then {"summary":{…}}')
    .action(async (tree: string, a: number | undefined, b: number | undefined, opts: { home?: string, json?: boolean }) => {
      const print = (c: PathChange): void => {
        process.stdout.write(opts.json === true ? JSON.stringify(c) + '\n' : `${c.change}\t${displayPath(c.path)}\n`)
      }
      const summary = await diffViaAgentOrLocally(opts.home, tree, a, b, print)
      if (opts.json === true) process.stdout.write(JSON.stringify({ summary }) + '\n')
      else process.stderr.write(`${tree}: ${summary.from === undefined ? 'nothing' : `v${summary.from}`} → v${summary.to}: ${Object.entries(summary.counts).map(([k, n]) => `${n} ${k}`).join(', ')}\n`)
    })
}

/** Through the running agent (its store is locked while it runs), else from the store directly. */
async function diffViaAgentOrLocally (homeArg: string | undefined, tree: string, from: number | undefined, to: number | undefined, onChange: (c: PathChange) => void): Promise<DiffSummary> {
  const api = await connectAgent(resolveHome(homeArg))
  if (api !== undefined) return await api.diff({ tree, from, to }, { onChange })
  const { diffSeqsOf, diffVersions, emptyCounts } = await import('../versions/version-diff.js')
  return await withLocalContext(homeArg, async ({ store }) => {
    const seqs = await diffSeqsOf(store.catalog, tree, from, to)
    const counts = emptyCounts()
    for await (const c of diffVersions(store.catalog, tree, seqs)) { counts[c.change]++; onChange(c) }
    return { tree, ...seqs, counts }
  })
}

function registerAccept (program: Command): void {
  program.command('accept')
    .description('expose a version the subscription\'s gate refused: PATH flips to it and the post-version command runs (needs the running agent)')
    .addOption(homeOption())
    .argument('<tree>', 'tree name')
    .argument('<seq>', 'the refused version (deltamesh status shows it)', parseSeq)
    .action(async (tree: string, seq: number, opts: { home?: string }) => {
      const home = resolveHome(opts.home)
      const api = await connectAgent(home)
      if (api === undefined) throw new ExitError(new AgentNotRunningError(home.controlSocket, home.root).message, 1)
      const r = await api.accept(tree, seq)
      process.stdout.write(`accepted ${tree}@${seq}${r.path === undefined ? '' : `: ${r.path} now shows it`}${r.previousSeq === undefined ? '' : ` (was v${r.previousSeq})`}\n`)
    })
}

function registerEvents (program: Command): void {
  program.command('events')
    .description('follow the running agent\'s events until interrupted: versions announced, admitted or refused; syncs started, progressing, complete or failed; gates; path flips; post-version commands; peers; limits')
    .addOption(homeOption())
    .option('--tree <tree>', 'only this tree\'s events (and those of no tree: peers, limits)')
    .option('--json', 'one JSON object per line, each with its time')
    .action(async (opts: { home?: string, tree?: string, json?: boolean }) => {
      const home = resolveHome(opts.home)
      const api = await connectAgent(home)
      if (api === undefined) throw new ExitError(new AgentNotRunningError(home.controlSocket, home.root).message, 1)
      const interrupted = new AbortController()
      const stop = (): void => { interrupted.abort() }
      process.once('SIGINT', stop)
      process.once('SIGTERM', stop)
      try {
        await api.events({ tree: opts.tree, signal: interrupted.signal, onEvent: e => { process.stdout.write(opts.json === true ? JSON.stringify(e) + '\n' : formatEvent(e) + '\n') } })
      } finally {
        process.removeListener('SIGINT', stop)
        process.removeListener('SIGTERM', stop)
      }
    })
}

/** One line for people: time, type, what it concerns, the details that matter. */
export function formatEvent (e: AgentEvent): string {
  const what = e.tree === undefined ? (e.peer ?? '') : `${e.tree}${e.seq === undefined ? '' : `@${e.seq}`}`
  const details: string[] = []
  if (e.label !== undefined && e.label !== '') details.push(`(${e.label})`)
  if (e.phase !== undefined) details.push(e.phase)
  if (e.bytesTotal !== undefined) details.push(`${formatBytes(e.bytesDone ?? 0)} of ${formatBytes(e.bytesTotal)}`)
  if (e.bytesFetched !== undefined) details.push(`${formatBytes(e.bytesFetched)} fetched`)
  if (e.path !== undefined) details.push(`→ ${e.path}`)
  if (e.reason !== undefined) details.push(e.reason)
  if (e.message !== undefined) details.push(e.message)
  if (e.changes !== undefined) details.push(Object.entries(e.changes).filter(([, n]) => n > 0).map(([k, n]) => `${n} ${k}`).join(', ') || 'no changes')
  if (e.coalesced !== undefined && e.coalesced > 0) details.push(`${e.coalesced} version(s) coalesced`)
  if (e.tree !== undefined && e.peer !== undefined) details.push(`from ${e.peer.slice(-12)}`)
  if (e.count !== undefined) details.push(`${e.count} events`)
  const out = `${e.time}  ${e.type.padEnd(18)}  ${what}${details.length === 0 ? '' : '  ' + details.join(' ')}`
  return e.output === undefined || e.output.length === 0 ? out : `${out}\n${e.output.map(l => `    | ${l}`).join('\n')}`
}

/** status: each tree's commands, their counters, and a version the gate refused with the command's last lines. */
export function formatHooks (trees: TreeStatus[]): string[] {
  const out: string[] = []
  for (const t of trees) {
    if (t.gate === undefined && t.onVersion === undefined && t.gateRefused === undefined) continue
    const h = t.hooks
    if (t.gate !== undefined) out.push(`${t.name}: gate ${formatArgv(t.gate.argv)} (timeout ${t.gate.timeoutMs / 1000} s)${h === undefined ? '' : `: ${h.gateRuns} run, ${h.gateRefusals} refused`}`)
    if (t.onVersion !== undefined) {
      const last = h?.lastOnVersion
      out.push(`${t.name}: on-version ${formatArgv(t.onVersion.argv)}${h === undefined ? '' : `: ${h.onVersionRuns} run, ${h.onVersionFailures} failed, ${h.onVersionCoalesced} coalesced${h.onVersionRunning === undefined ? '' : `, running for v${h.onVersionRunning}`}`}${last === undefined ? '' : `; last v${last.seq} ${last.ok ? 'ok' : last.reason ?? 'failed'}`}`)
    }
    const r = t.gateRefused
    if (r !== undefined) out.push(`${t.name}: ${r.message}`, ...r.output.map(l => `    | ${l}`))
  }
  return out
}
