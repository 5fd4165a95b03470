// Subscriptions: a tree kept at a path (a symlink to its current version) with the subscriber's filter and
// limits, and the waiters of `deltamesh sync`. The syncs themselves are sync-runner.ts's.
import { lstat, mkdir, rename, symlink } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { validateTreeName } from '../../protocol/paths.js'
import type { Logger } from '../core/log.js'
import type { TreeRecord } from '../store/types.js'
import { compileFilter, sameFilter } from '../versions/filter.js'
import { parseMaxDrop } from '../versions/selection-guard.js'
import { DEFAULT_GATE_TIMEOUT_MS, DEFAULT_ON_VERSION_TIMEOUT_MS, MAX_HOOK_TIMEOUT_MS, type AcceptResult, type SubscribeRequest, type SyncResult, type WaitForSyncOptions } from '../api/api.js'
import type { HookCommand } from '../store/types.js'
import { checkArgv } from '../core/command-line.js'
import { openEnvelope } from '../../protocol/envelope.js'
import { DeltameshError } from '../../protocol/errors.js'
import { flipToVersion } from '../versions/expose.js'
import { GateRefusedError } from './version-hooks.js'
import { shapedFor, trustedKeys, type TreeManagerComponents, type TreeStates, type Waiter } from './tree-state.js'
import type { SyncRunner } from './sync-runner.js'
import { waitingProgress, waitingReason } from './why-waiting.js'

/** `accept` asked of a version that cannot be accepted (not held, not refused, older than the served one). */
export class AcceptError extends DeltameshError {
  static override name = 'AcceptError'
  constructor (message: string) {
    super(`accept: ${message}`)
    this.name = 'AcceptError'
  }
}

/** A subscription's command from the control socket: checked again here, whatever the client did. */
function hookOf (option: string, argv: string[] | undefined, timeoutMs: number | undefined, defaultMs: number): HookCommand | undefined {
  if (argv === undefined) return undefined
  const timeout = timeoutMs ?? defaultMs
  if (!Number.isSafeInteger(timeout) || timeout <= 0 || timeout > MAX_HOOK_TIMEOUT_MS) throw new RangeError(`--${option}-timeout: expected 1 ms to ${MAX_HOOK_TIMEOUT_MS / 3600_000} h`)
  return { argv: checkArgv(argv, `--${option}`), timeoutMs: timeout }
}

export class Subscriptions {
  constructor (private readonly c: TreeManagerComponents, private readonly trees: TreeStates, private readonly runner: SyncRunner, private readonly log: Logger) {}

  async subscribe (request: SubscribeRequest): Promise<void> {
    const tree = validateTreeName(request.tree)
    // patterns and limits come from the control socket: checked here again, whatever the client did
    compileFilter({ include: request.include, exclude: request.exclude })
    const maxDropPercent = request.maxDropPercent === undefined ? undefined : parseMaxDrop(request.maxDropPercent)
    const to = resolve(request.to)
    const existing = await lstat(to).catch(() => undefined)
    if (existing !== undefined && !existing.isSymbolicLink()) throw new Error(`${to} exists and is not a symlink: deltamesh manages PATH as a symlink to the current version; pick a new path`)
    const seed = request.seed === undefined ? undefined : resolve(request.seed)
    if (seed !== undefined && (await lstat(seed).catch(() => undefined))?.isDirectory() !== true) throw new Error(`seed ${seed} is not a directory`)
    await mkdir(dirname(to), { recursive: true })
    const record: TreeRecord = {
      ...((await this.c.catalog.getTree(tree)) ?? { name: tree }),
      subscribedTo: to,
      include: request.include,
      exclude: request.exclude,
      seed,
      seedCopy: seed === undefined ? undefined : request.seedCopy === true,
      allowEmpty: request.allowEmpty === true ? true : undefined,
      maxDropPercent,
      gate: hookOf('gate', request.gate, request.gateTimeoutMs, DEFAULT_GATE_TIMEOUT_MS),
      onVersion: hookOf('on-version', request.onVersion, request.onVersionTimeoutMs, DEFAULT_ON_VERSION_TIMEOUT_MS),
    }
    await this.c.catalog.putTree(record)
    if (record.currentSeq !== undefined) {
      const current = await this.c.catalog.getVersion(tree, record.currentSeq)
      await this.pointAt(to, this.c.home.versionDir(tree, record.currentSeq, current?.generation))
    }
    if (trustedKeys(this.c, tree).size <= 1) this.log.warn({ tree }, 'subscribed, but no publisher key is trusted for this tree yet: run `deltamesh trust`')
    this.c.watchTree(tree)
    const state = this.trees.state(tree)
    // a new subscription is a new decision: a refusal is reconsidered, a build with another filter restarted
    state.refused = undefined
    const running = state.running
    if (running !== undefined && !sameFilter(running.selection, record)) {
      this.log.info({ tree, seq: running.seq }, 'subscription filter changed; restarting the build with the new one')
      running.controller.abort(new Error('subscription filter changed'))
      await running.done
    }
    this.runner.ensureSync(state)
  }

  async unsubscribe (tree: string): Promise<void> {
    const record = await this.c.catalog.getTree(tree)
    if (record === undefined) return
    await this.c.catalog.putTree({ ...record, subscribedTo: undefined, include: undefined, exclude: undefined, allowEmpty: undefined, maxDropPercent: undefined, gate: undefined, onVersion: undefined })
    const state = this.trees.get(tree)
    if (state !== undefined) state.refused = undefined
    if (state?.running !== undefined) { state.running.controller.abort(new Error('unsubscribed')); await state.running.done }
    this.c.listenHaves?.(tree, false)
  }

  /** Atomically (re)points a subscription path: a new symlink renamed over the old one. */
  private async pointAt (path: string, target: string): Promise<void> {
    const temp = `${path}.deltamesh-tmp-${process.pid}`
    await symlink(target, temp)
    await rename(temp, path)
  }

  /** `deltamesh accept`: exposes a complete version the gate refused, as if the gate had passed it. */
  async accept (tree: string, seq: number): Promise<AcceptResult> {
    const record = await this.c.catalog.getTree(tree)
    if (record?.subscribedTo === undefined) throw new AcceptError(`not subscribed to ${tree}`)
    const version = await this.c.catalog.getVersion(tree, seq)
    if (version?.state !== 'complete') throw new AcceptError(`${tree}@${seq} is not held here${version === undefined ? '' : ` (${version.state})`}`)
    if (version.gate?.outcome !== 'refused') throw new AcceptError(`${tree}@${seq} was not refused by a gate${record.currentSeq === seq ? ': it is the version served' : ''}`)
    if (record.currentSeq !== undefined && record.currentSeq > seq) throw new AcceptError(`${tree}@${seq} is older than the version served (v${record.currentSeq})`)
    const flipped = await flipToVersion(this.c, tree, seq, version.generation)
    await this.c.catalog.putVersion({ ...version, gate: { ...version.gate, outcome: 'accepted' } })
    await this.c.catalog.putTree({ ...flipped.tree, currentSeq: seq })
    this.log.info({ tree, seq, previous: record.currentSeq }, 'version refused by the gate accepted by hand: path flipped')
    this.c.events.emit('version-accepted', { tree, seq, label: openEnvelope(version.envelope).label, previousSeq: record.currentSeq })
    this.c.hooks.flipped(tree, seq, record.currentSeq, flipped.path)
    this.c.headsChanged()
    if (flipped.subscriptionError !== undefined) throw flipped.subscriptionError
    return { tree, seq, previousSeq: record.currentSeq, path: flipped.path }
  }

  async waitForSync (tree: string, options: WaitForSyncOptions): Promise<SyncResult> {
    const record = await this.c.catalog.getTree(tree)
    if (record?.subscribedTo === undefined) throw new Error(`not subscribed to ${tree}: run \`deltamesh subscribe --home DIR ${tree} --to PATH\` first`)
    const state = this.trees.state(tree)
    const minSeq = options.minSeq ?? 0
    const current = record.currentSeq === undefined ? undefined : await this.c.catalog.getVersion(tree, record.currentSeq)
    if (state.newest !== undefined && record.currentSeq !== undefined && record.currentSeq >= state.newest.seq && record.currentSeq >= minSeq && shapedFor(current, record)) {
      const damaged = state.damaged?.seq === record.currentSeq ? state.damaged.message : undefined
      return { tree, seq: record.currentSeq, bytesFetched: 0, durationMs: 0, alreadyHeld: true, ...(damaged === undefined ? {} : { damaged }) }
    }
    // refused for its selection, it is not retried: waiting could only time out
    const refused = state.refused
    if (refused !== undefined && refused.seq === state.newest?.seq && refused.seq >= minSeq) throw refused.error
    // held, but refused by the gate: it is exposed by `accept` or a newer version only
    const newest = state.newest === undefined ? undefined : await this.c.catalog.getVersion(tree, state.newest.seq)
    if (newest?.state === 'complete' && newest.gate?.outcome === 'refused' && newest.seq > (record.currentSeq ?? 0) && newest.seq >= minSeq) {
      throw new GateRefusedError(tree, newest.seq, newest.gate.reason ?? 'refused', record.currentSeq)
    }
    return await new Promise<SyncResult>((resolvePromise, rejectPromise) => {
      const waiter: Waiter = { minSeq, onProgress: options.onProgress, resolve: resolvePromise, reject: rejectPromise }
      state.waiters.add(waiter)
      options.signal?.addEventListener('abort', () => { state.waiters.delete(waiter); rejectPromise(options.signal?.reason ?? new Error('aborted')) }, { once: true })
      if (state.running !== undefined) { options.onProgress?.(state.running.sync.progress); return }
      // nothing runs: if a refused version explains the wait, say so at once
      const stuck = waitingReason(state.refusedOffer, record)
      if (stuck !== undefined && state.refusedOffer !== undefined) options.onProgress?.(waitingProgress(tree, state.refusedOffer.seq, stuck))
    })
  }
}
