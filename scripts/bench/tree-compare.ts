// Checks a mirror against the tree it should hold: both as describeTree descriptions (type, permission bits,
// size, SHA-256 of contents, symlink target of every entry), and a failure says how many entries differ and how.
import { describeTreeInParallel } from './describe-tree.js'

/** One entry that differs: absent from one side (`want` or `got` undefined) or described differently. */
export interface EntryDifference { path: string, want?: string, got?: string }

/** Every entry whose description differs, missing and extra entries included, by path. */
export function treeDifferences (want: Readonly<Record<string, string>>, got: Readonly<Record<string, string>>): EntryDifference[] {
  const out: EntryDifference[] = []
  for (const [path, w] of Object.entries(want)) {
    const g = Object.hasOwn(got, path) ? got[path] : undefined
    if (g === undefined) out.push({ path, want: w })
    else if (g !== w) out.push({ path, want: w, got: g })
  }
  for (const [path, g] of Object.entries(got)) if (!Object.hasOwn(want, path)) out.push({ path, got: g })
  return out.sort((a, b) => a.path < b.path ? -1 : a.path > b.path ? 1 : 0)
}

/** Hashes cut to 12 hex digits: enough to see which part differs, short enough for a log line. */
const short = (description: string): string => description.replace(/\b([0-9a-f]{12})[0-9a-f]{52}\b/, '$1…')

/** "N entries, e.g. a (missing), b (extra), c (file 644 10 3fa2… ≠ file 644 11 9b1c…)". */
export function formatDifferences (diffs: EntryDifference[], examples = 5): string {
  const one = (d: EntryDifference): string =>
    d.got === undefined ? `${d.path} (missing)` : d.want === undefined ? `${d.path} (extra)` : `${d.path} (want ${short(d.want)}, got ${short(d.got)})`
  return `${diffs.length} entries, e.g. ${diffs.slice(0, examples).map(one).join(', ')}`
}

/** Throws `${what} (${dir}) differs from ${wantName} in N entries, e.g. …` unless the tree at dir is described exactly as `want`. */
export async function checkTreeMatches (what: string, dir: string, want: Readonly<Record<string, string>>, wantName: string): Promise<void> {
  const diffs = treeDifferences(want, await describeTreeInParallel(dir))
  if (diffs.length > 0) throw new Error(`${what} (${dir}) differs from ${wantName} in ${formatDifferences(diffs)}`)
}
