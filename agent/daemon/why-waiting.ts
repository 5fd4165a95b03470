// Why a tree's sync waits (issue 24.4), in words an operator can act on: a newer version refused on arrival
// (most often signed by a key not trusted here), and, at a publisher, versions it can no longer serve
// completely because their source changed after they were published. A running sync reports its own
// blockage (sync/version-sync.ts: no peer holds some chunks); this file covers the waits no sync runs for.
import { formatPublisherKey, type Envelope } from '../../protocol/envelope.js'
import type { RejectReason } from '../net/admission.js'
import type { Stuck, SyncProgress } from '../sync/progress.js'
import type { Catalog, ChunkIndex, TreeRecord, UnservableChunks } from '../store/types.js'

/** A version newer than any admitted here, refused on arrival: what a subscriber waits for in vain. */
export interface RefusedOffer {
  seq: number
  code: RejectReason
  message: string
  atMs: number
}

export interface Marked { tree: string, seq: number, newFile: boolean, held: boolean }

/** Files named per unservable version (the count goes on). */
export const MAX_UNSERVABLE_PATHS = 10

/** The sentence `sync`, `status` and the dashboard show for a refused announcement. */
export function refusedOffer (envelope: Envelope, code: RejectReason, reason: string, from: string | undefined): RefusedOffer {
  const by = from === undefined ? '' : ` announced by ${from}`
  let message = `version ${envelope.seq}${by} refused: ${code}`
  if (code === 'untrusted-key') {
    const key = formatPublisherKey(envelope.publisherKey)
    message += ` (signed by ${key}, which is not trusted for ${envelope.tree} here; if it is the publisher's key, ` +
      `as its \`deltamesh init\` printed it: deltamesh trust --home DIR ${envelope.tree} ${key})`
  } else {
    message += ` (${reason})`
  }
  return { seq: envelope.seq, code, message, atMs: Date.now() }
}

/** Why a subscribed tree with no sync running is not at a newer version, if a refusal explains it. */
export function waitingReason (refused: RefusedOffer | undefined, record: TreeRecord | undefined): Stuck | undefined {
  if (refused === undefined || record?.subscribedTo === undefined) return undefined
  if ((record.currentSeq ?? 0) >= refused.seq) return undefined
  return { reason: refused.code === 'untrusted-key' ? 'untrusted-key' : 'refused', message: refused.message, sinceMs: refused.atMs }
}

/** The progress a `sync` waiter is shown while no sync runs and `stuck` says why. */
export function waitingProgress (tree: string, seq: number, stuck: Stuck): SyncProgress {
  return { tree, seq, phase: 'waiting', bytesTotal: 0, bytesDone: 0, chunksTotal: 0, chunksDone: 0, bytesLocal: 0, rateBps: 0, startedAtMs: stuck.sinceMs, sources: 0, stuck }
}

/** What status says of a version its publisher cannot serve completely. */
export function unservableMessage (tree: string, seq: number, u: UnservableChunks): string {
  const more = u.paths.length >= MAX_UNSERVABLE_PATHS ? ', …' : ''
  return `not fully servable: the source changed after ${tree}@${seq} was published (${u.chunks} chunk${u.chunks === 1 ? '' : 's'} ` +
    `no longer match, in ${u.paths.join(', ')}${more}); sites missing them cannot complete it: publish again`
}

/**
 * The publisher's side: a chunk read from a source directory no longer hashed to its id (the index dropped that
 * location). The newest complete version published from that directory is marked not fully servable, in the
 * catalog (it survives a restart, when the dropped location would no longer tell). Serialized: concurrent reads
 * of several changed chunks each add one.
 */
export class UnservableMarker {
  private queue: Promise<unknown> = Promise.resolve()

  constructor (private readonly c: { index: Pick<ChunkIndex, 'getRoot'>, catalog: Pick<Catalog, 'listVersions' | 'putVersion'> }) {}

  /**
   * Resolves to the version marked, and whether `relPath` is a file not named before (worth a warning); for a
   * materialized version's root, to that version (held: damaged behind the agent's back, nothing marked).
   */
  mark (rootId: number, relPath: string): Promise<Marked | undefined> {
    const run = this.queue.then(async () => await this.markNow(rootId, relPath))
    this.queue = run.catch(() => {})
    return run
  }

  private async markNow (rootId: number, relPath: string): Promise<Marked | undefined> {
    const root = await this.c.index.getRoot(rootId)
    if (root?.kind === 'version' && root.tree !== undefined && root.seq !== undefined) return { tree: root.tree, seq: root.seq, newFile: false, held: true }
    if (root?.kind !== 'source' || root.tree === undefined) return undefined
    const published = (await this.c.catalog.listVersions(root.tree)).filter(v => v.rootId === rootId && v.state === 'complete')
    const version = published.reduce<typeof published[number] | undefined>((a, v) => a === undefined || v.seq > a.seq ? v : a, undefined)
    if (version === undefined) return undefined
    const u = version.unservable ?? { chunks: 0, paths: [], sinceMs: Date.now() }
    const newFile = !u.paths.includes(relPath)
    await this.c.catalog.putVersion({ ...version, unservable: { ...u, chunks: u.chunks + 1, paths: newFile && u.paths.length < MAX_UNSERVABLE_PATHS ? [...u.paths, relPath] : u.paths } })
    return { tree: root.tree, seq: version.seq, newFile, held: false }
  }
}
