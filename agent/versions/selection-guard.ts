import type { ManifestEntry } from '../../protocol/manifest.js'
import { SelectionRefusedError, type SelectionCounts, type VersionContext } from './errors.js'
import { describeFilter, type FilterSpec } from './filter.js'
import type { PathFilter } from './filter.js'

// The last check before a version replaces the one a mirror serves: a filter that selects nothing (a typo:
// `--include 'Packages/x86-64/'`), or a version that lost most of the files the mirror holds (a publisher that
// published an empty mount), would otherwise flip the mirror to an empty or gutted tree, complete and exit 0.

/** subscribe --max-drop default: a version may select at most half as many files as the one served. */
export const DEFAULT_MAX_DROP_PERCENT = 50

export interface SelectionGuard {
  /** The subscription's patterns, for the message. */
  filter: FilterSpec
  /** subscribe --allow-empty. */
  allowEmpty: boolean
  /** subscribe --max-drop (0–100); 100 never refuses a drop. */
  maxDropPercent: number
  /**
   * The version served now: its regular files as materialized, and whether they were selected by the same
   * filter. The drop check compares versions under one filter only: a filter the operator changed is
   * checked for emptiness alone (its result is the operator's choice, shown by status).
   */
  previous?: { seq: number, files?: number, sameFilter: boolean }
  /** The subscription path, for the message. */
  mirror?: string
}

/** Regular files of a manifest, and how many of them the filter selects (one pass, one entry in memory). */
export async function countSelected (entries: AsyncIterable<ManifestEntry>, filter: PathFilter | undefined, signal?: AbortSignal): Promise<{ selected: number, total: number }> {
  let selected = 0
  let total = 0
  for await (const entry of entries) {
    signal?.throwIfAborted()
    if (entry.type !== 'file') continue
    total++
    if (filter === undefined || filter(entry.path, entry.type)) selected++
  }
  return { selected, total }
}

/** Throws SelectionRefusedError when the selection would empty or gut the mirror beyond what the subscription allows. */
export function checkSelection (context: VersionContext, counted: { selected: number, total: number }, guard: SelectionGuard): SelectionCounts {
  const counts: SelectionCounts = { ...counted, previousSeq: guard.previous?.seq, previousFiles: guard.previous?.files }
  const refuse = (reason: 'empty' | 'drop'): never => {
    throw new SelectionRefusedError(context, reason, describeFilter(guard.filter), counts, guard.maxDropPercent, guard.mirror)
  }
  if (counted.selected === 0) {
    if (!guard.allowEmpty) refuse('empty')
    return counts
  }
  const previous = guard.previous
  if (previous?.sameFilter === true && previous.files !== undefined && previous.files > 0 && guard.maxDropPercent < 100) {
    const dropped = previous.files - counted.selected
    if (dropped * 100 > previous.files * guard.maxDropPercent) refuse('drop')
  }
  return counts
}

/** A --max-drop value: '50%', '50' or a number, 0–100. Throws RangeError. */
export function parseMaxDrop (value: unknown): number {
  const n = typeof value === 'number' ? value : typeof value === 'string' && /^\s*\d+(\.\d+)?\s*%?\s*$/.test(value) ? Number.parseFloat(value) : Number.NaN
  if (!Number.isFinite(n) || n < 0 || n > 100) throw new RangeError(`--max-drop: expected a percentage from 0% to 100% (e.g. 50%), not ${JSON.stringify(value)}`)
  return n
}
