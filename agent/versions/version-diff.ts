// `deltamesh diff` and DELTAMESH_CHANGES: what changed between two versions of a tree held here, from their
// manifests in the catalog alone (no file of either version is read, so a version whose directory was pruned
// still diffs while its manifest is kept). Streams: memory is two manifest entries whatever the tree's size.
import { createWriteStream } from 'node:fs'
import { mkdir, readdir, rename, rm } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { once } from 'node:events'
import { openEnvelope } from '../../protocol/envelope.js'
import { diffManifests, type ChangeKind, type PathChange } from '../../protocol/manifest-diff.js'
import type { ManifestEntry } from '../../protocol/manifest.js'
import { displayPath } from '../../protocol/paths.js'
import { DeltameshError } from '../../protocol/errors.js'
import type { Catalog, VersionRecord } from '../store/types.js'
import { loadRoot, readManifestEntries } from '../store/manifest-io.js'
import type { PathFilter } from './filter.js'

/** A diff asked of versions this site does not hold (or whose manifest it no longer has). */
export class VersionDiffError extends DeltameshError {
  static override name = 'VersionDiffError'
  constructor (readonly tree: string, message: string) {
    super(`diff ${tree}: ${message}`)
    this.name = 'VersionDiffError'
  }
}

export interface DiffSeqs {
  /** The older version; undefined: none (everything of `to` is added). */
  from?: number
  to: number
}

export type ChangeCounts = Record<ChangeKind, number>

export function emptyCounts (): ChangeCounts {
  return { added: 0, removed: 0, changed: 0, 'mode-changed': 0 }
}

/**
 * The two versions `deltamesh diff TREE [A] [B]` compares: both given; A and the newest complete version (B
 * omitted); or, with neither, the version before the current one and the current one (the current one is the
 * newest complete version where the tree is not served here, at a publisher).
 */
export async function diffSeqsOf (catalog: Catalog, tree: string, a?: number, b?: number): Promise<DiffSeqs> {
  const complete = (await catalog.listVersions(tree)).filter(v => v.state === 'complete').map(v => v.seq).sort((x, y) => x - y)
  if (complete.length === 0) throw new VersionDiffError(tree, 'no complete version of this tree is held here')
  if (a !== undefined && b !== undefined) return { from: a, to: b }
  if (a !== undefined) return { from: a, to: complete[complete.length - 1] as number }
  const current = (await catalog.getTree(tree))?.currentSeq ?? complete[complete.length - 1] as number
  const older = complete.filter(s => s < current)
  return { from: older[older.length - 1], to: current }
}

async function entriesOf (catalog: Catalog, tree: string, seq: number, signal?: AbortSignal): Promise<AsyncIterable<ManifestEntry>> {
  const record: VersionRecord | undefined = await catalog.getVersion(tree, seq)
  if (record === undefined) throw new VersionDiffError(tree, `version ${seq} is not known here`)
  const envelope = openEnvelope(record.envelope)
  if (!(await catalog.hasBlob(envelope.rootHash))) throw new VersionDiffError(tree, `the manifest of version ${seq} is not held here (state ${record.state})`)
  return readManifestEntries(catalog, await loadRoot(catalog, envelope.rootHash), signal)
}

async function * nothing (): AsyncGenerator<ManifestEntry> {}

/**
 * The changes from version `from` (undefined: an empty tree) to version `to`, in canonical path order; with a
 * filter (a subscription's), only the paths it selects (in the version that has them).
 */
export async function * diffVersions (catalog: Catalog, tree: string, seqs: DiffSeqs, options: { filter?: PathFilter, signal?: AbortSignal } = {}): AsyncGenerator<PathChange> {
  const older = seqs.from === undefined ? nothing() : await entriesOf(catalog, tree, seqs.from, options.signal)
  const newer = await entriesOf(catalog, tree, seqs.to, options.signal)
  const filter = options.filter
  for await (const change of diffManifests(older, newer)) {
    if (filter !== undefined && !filter(change.path, change.type)) continue
    yield change
  }
}

/** One line of a changes file: the kind, a tab, the path in its display form (protocol/paths.ts displayPath). */
export function changeLine (c: PathChange): string {
  return `${c.change}\t${displayPath(c.path)}\n`
}

/**
 * Writes the changes to `file` (one changeLine each; written to a temporary name, then renamed) and returns
 * their counts per kind.
 */
export async function writeChangesFile (file: string, changes: AsyncIterable<PathChange>): Promise<ChangeCounts> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 })
  const temp = `${file}.tmp-${process.pid}`
  const out = createWriteStream(temp, { mode: 0o644 })
  const counts = emptyCounts()
  try {
    for await (const c of changes) {
      counts[c.change]++
      if (!out.write(changeLine(c))) await once(out, 'drain')
    }
    await new Promise<void>((resolve, reject) => { out.end((err?: Error | null) => { if (err == null) resolve(); else reject(err) }) })
    await rename(temp, file)
  } catch (err) {
    out.destroy()
    await rm(temp, { force: true })
    throw err
  }
  return counts
}

/** Changes files of a tree kept besides the newest one written (a command may still read an older one). */
const KEEP_CHANGES_FILES = 8

/** Removes all but the KEEP_CHANGES_FILES newest `<seq>…` files of a changes directory. */
export async function pruneChangesFiles (dir: string): Promise<void> {
  const names = await readdir(dir).catch(() => [] as string[])
  const bySeq = names.map(name => ({ name, seq: Number.parseInt(name, 10) })).filter(f => Number.isSafeInteger(f.seq)).sort((a, b) => b.seq - a.seq)
  for (const f of bySeq.slice(KEEP_CHANGES_FILES)) await rm(join(dir, f.name), { force: true })
}
