// A subscription's commands (README "Reacting to new versions"): the gate runs on each new complete version
// before the subscription path flips to it (exit 0 lets it flip); the post-version command runs after a flip,
// in the background, once at a time per tree — versions that flip while it runs are coalesced into one more
// run, for the newest. Both run without a shell (core/run-command.ts) with the DELTAMESH_* environment and a
// changes file (versions/version-diff.ts).
import { join } from 'node:path'
import { openEnvelope, type Envelope } from '../../protocol/envelope.js'
import { DeltameshError } from '../../protocol/errors.js'
import type { HomeLayout } from '../core/home.js'
import type { Logger } from '../core/log.js'
import { describeOutcome, runCommand, type CommandOutcome } from '../core/run-command.js'
import type { Catalog, GateRecord, HookCommand, TreeRecord, VersionRecord } from '../store/types.js'
import { compileFilter } from '../versions/filter.js'
import { diffVersions, pruneChangesFiles, writeChangesFile, type ChangeCounts } from '../versions/version-diff.js'
import type { MaterializeInit } from '../versions/build-types.js'
import type { HookStats } from '../api/api.js'
import type { EventHub } from './events.js'

/** A version the subscription's gate refused: held here (its chunks served), not exposed. */
export class GateRefusedError extends DeltameshError {
  static override name = 'GateRefusedError'
  constructor (readonly tree: string, readonly seq: number, readonly reason: string, readonly currentSeq: number | undefined) {
    super(`${tree}@${seq} was refused by the subscription's gate (${reason}); ${currentSeq === undefined ? 'no version is served yet' : `v${currentSeq} stays served`}. The gate's last output: deltamesh status; to expose it anyway: deltamesh accept ${tree} ${seq}`)
    this.name = 'GateRefusedError'
  }
}

export interface VersionHooksComponents {
  home: HomeLayout
  catalog: Catalog
  log: Logger
  events: EventHub
}

/** What a command is told of the version (README lists the variables). */
interface HookContext {
  hook: 'gate' | 'on-version'
  tree: string
  seq: number
  label: string
  versionDir: string
  /** gate: the directory served now; on-version: the one served before the flip. */
  otherSeq?: number
  otherDir?: string
  path?: string
  changesFile: string
}

function hookEnv (h: HookContext): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = {
    DELTAMESH_HOOK: h.hook,
    DELTAMESH_TREE: h.tree,
    DELTAMESH_SEQ: String(h.seq),
    DELTAMESH_LABEL: h.label,
    DELTAMESH_STAGED_PATH: h.versionDir,
    DELTAMESH_PATH: h.path,
    DELTAMESH_CHANGES: h.changesFile,
  }
  if (h.hook === 'gate') return { ...env, DELTAMESH_CURRENT_PATH: h.otherDir, DELTAMESH_CURRENT_SEQ: h.otherSeq?.toString() }
  return { ...env, DELTAMESH_CURRENT_PATH: h.versionDir, DELTAMESH_PREVIOUS_PATH: h.otherDir, DELTAMESH_PREVIOUS_SEQ: h.otherSeq?.toString() }
}

/** The post-version run of a tree in progress, and the newest version flipped to meanwhile. */
interface OnVersionRun {
  seq: number
  pending?: { seq: number, previousSeq?: number, coalesced: number }
  done: Promise<void>
}

export class VersionHooks {
  private readonly controller = new AbortController()
  private readonly stats = new Map<string, HookStats>()
  private readonly runs = new Map<string, OnVersionRun>()
  private stopped = false

  constructor (private readonly c: VersionHooksComponents) {}

  statsOf (tree: string): HookStats {
    let s = this.stats.get(tree)
    if (s === undefined) { s = { gateRuns: 0, gateRefusals: 0, onVersionRuns: 0, onVersionFailures: 0, onVersionCoalesced: 0 }; this.stats.set(tree, s) }
    const running = this.runs.get(tree)
    return { ...s, onVersionRunning: running?.seq }
  }

  private count (tree: string, change: (s: HookStats) => void): void {
    this.statsOf(tree)
    change(this.stats.get(tree) as HookStats)
  }

  /** The gate of a sync of `envelope` (undefined: the subscription has none); `served` is the version served now. */
  gateFor (record: TreeRecord, envelope: Envelope, served: VersionRecord | undefined, signal: AbortSignal): MaterializeInit['gate'] {
    const gate = record.gate
    if (gate === undefined) return undefined
    return async versionDir => await this.runGate(record, gate, envelope, { served, versionDir, signal })
  }

  private async runGate (record: TreeRecord, gate: HookCommand, envelope: Envelope, at: { served?: VersionRecord, versionDir: string, signal: AbortSignal }): Promise<GateRecord> {
    const { tree, seq, label } = envelope
    const served = at.served?.state === 'complete' ? at.served : undefined
    const { file, counts } = await this.changes(record, seq, served?.seq)
    this.c.events.emit('gate-started', { tree, seq, label, changes: counts })
    const otherDir = served === undefined ? undefined : this.c.home.versionDir(tree, served.seq, served.generation)
    const context: HookContext = { hook: 'gate', tree, seq, label, versionDir: at.versionDir, otherSeq: served?.seq, otherDir, path: record.subscribedTo, changesFile: file }
    const outcome = await this.run(gate, context, AbortSignal.any([at.signal, this.controller.signal]))
    // stopped (the agent stops, the sync was superseded): no decision; the version is gated again when resumed
    if (outcome.aborted) throw at.signal.reason ?? new Error('gate stopped: the agent is stopping')
    this.count(tree, s => { s.gateRuns++ })
    const result: GateRecord = { outcome: outcome.ok ? 'passed' : 'refused', exitCode: outcome.exitCode, durationMs: outcome.durationMs, atMs: Date.now(), output: outcome.output }
    if (outcome.ok) {
      this.c.log.info({ tree, seq, ms: outcome.durationMs }, 'gate passed')
      this.c.events.emit('gate-passed', { tree, seq, label, durationMs: outcome.durationMs, exitCode: 0 })
      return result
    }
    result.reason = describeOutcome(outcome, gate.timeoutMs)
    this.count(tree, s => { s.gateRefusals++ })
    this.c.log.warn({ tree, seq, reason: result.reason, output: outcome.output }, `gate refused ${tree}@${seq}: ${result.reason}; the version is kept but not served (deltamesh accept ${tree} ${seq} exposes it)`)
    this.c.events.emit('gate-refused', { tree, seq, label, reason: result.reason, exitCode: outcome.exitCode, output: outcome.output, durationMs: outcome.durationMs })
    return result
  }

  /**
   * The subscription path of `tree` now points at version `seq` (served before: `previousSeq`); `newVersion`
   * false: the same version rebuilt for a changed filter (no post-version command).
   */
  flipped (tree: string, seq: number, previousSeq: number | undefined, path: string | undefined, newVersion = true): void {
    this.c.events.emit('path-flipped', { tree, seq, previousSeq, path })
    if (this.stopped || !newVersion) return
    const run = this.runs.get(tree)
    if (run !== undefined) {
      if (run.pending === undefined) run.pending = { seq, previousSeq: run.seq, coalesced: 0 }
      else { run.pending.seq = seq; run.pending.coalesced++; this.count(tree, s => { s.onVersionCoalesced++ }) }
      return
    }
    this.startOnVersion(tree, { seq, previousSeq, coalesced: 0 })
  }

  private startOnVersion (tree: string, job: { seq: number, previousSeq?: number, coalesced: number }): void {
    const run: OnVersionRun = { seq: job.seq, done: Promise.resolve() }
    this.runs.set(tree, run)
    run.done = this.onVersion(tree, job)
      .catch(err => { this.c.log.error({ tree, seq: job.seq, err }, 'post-version command not run') })
      .finally(() => {
        this.runs.delete(tree)
        if (run.pending !== undefined && !this.stopped) this.startOnVersion(tree, run.pending)
      })
  }

  private async onVersion (tree: string, job: { seq: number, previousSeq?: number, coalesced: number }): Promise<void> {
    const record = await this.c.catalog.getTree(tree)
    const command = record?.onVersion
    if (record === undefined || command === undefined) return
    const version = await this.c.catalog.getVersion(tree, job.seq)
    if (version === undefined) return
    const previous = job.previousSeq === undefined ? undefined : await this.c.catalog.getVersion(tree, job.previousSeq)
    const label = openEnvelope(version.envelope).label
    const { file, counts } = await this.changes(record, job.seq, previous?.seq)
    const context: HookContext = {
      hook: 'on-version', tree, seq: job.seq, label, versionDir: this.c.home.versionDir(tree, job.seq, version.generation), changesFile: file, path: record.subscribedTo,
      otherSeq: previous?.seq, otherDir: previous === undefined ? undefined : this.c.home.versionDir(tree, previous.seq, previous.generation),
    }
    this.c.events.emit('on-version-started', { tree, seq: job.seq, label, previousSeq: previous?.seq, coalesced: job.coalesced, changes: counts })
    const outcome = await this.run(command, context, this.controller.signal)
    this.count(tree, s => { s.onVersionRuns++; if (!outcome.ok) s.onVersionFailures++; s.lastOnVersion = { seq: job.seq, ok: outcome.ok, reason: outcome.ok ? undefined : describeOutcome(outcome, command.timeoutMs), output: outcome.output, atMs: Date.now() } })
    if (outcome.ok) {
      this.c.log.info({ tree, seq: job.seq, ms: outcome.durationMs }, 'post-version command done')
      this.c.events.emit('on-version-done', { tree, seq: job.seq, durationMs: outcome.durationMs, exitCode: 0 })
    } else {
      const reason = describeOutcome(outcome, command.timeoutMs)
      this.c.log.warn({ tree, seq: job.seq, reason, output: outcome.output }, `post-version command failed: ${reason}`)
      this.c.events.emit('on-version-failed', { tree, seq: job.seq, reason, exitCode: outcome.exitCode, output: outcome.output, durationMs: outcome.durationMs })
    }
  }

  private async run (command: HookCommand, h: HookContext, signal: AbortSignal): Promise<CommandOutcome> {
    this.c.log.info({ tree: h.tree, seq: h.seq, hook: h.hook, argv: command.argv }, `running the ${h.hook} command`)
    return await runCommand({ argv: command.argv, cwd: h.versionDir, env: hookEnv(h), timeoutMs: command.timeoutMs, signal })
  }

  /**
   * Writes what changed from version `from` (the one served before; undefined: none) to `seq`, as the
   * subscription selects it, to trees/<tree>/changes/<seq>-from-<from>.
   */
  private async changes (record: TreeRecord, seq: number, from: number | undefined): Promise<{ file: string, counts: ChangeCounts }> {
    const dir = this.c.home.changesDir(record.name)
    const file = join(dir, `${seq}-from-${from ?? 'none'}`)
    const filter = compileFilter({ include: record.include, exclude: record.exclude })
    const counts = await writeChangesFile(file, diffVersions(this.c.catalog, record.name, { from, to: seq }, { filter, signal: this.controller.signal }))
    await pruneChangesFiles(dir)
    return { file, counts }
  }

  /** Stops the commands running (their process groups are killed) and waits for them. */
  async stop (): Promise<void> {
    this.stopped = true
    this.controller.abort(new Error('agent stopping'))
    await Promise.all([...this.runs.values()].map(async r => await r.done))
  }
}
