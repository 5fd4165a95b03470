import picomatch from 'picomatch'
import { DeltameshError } from '../../protocol/errors.js'
import { MAX_PATH_BYTES } from '../../protocol/limits.js'
import { parentOf } from '../../protocol/paths.js'
import type { ManifestEntry } from '../../protocol/manifest.js'

// Subscription filters: `--include` / `--exclude` patterns, the rules of .gitignore (which rsync users'
// habits also fit for the common cases):
//
//   - globs in picomatch syntax (`*`, `?`, `[…]`, `{a,b}`, `**`), matched against the path from the tree root;
//   - a pattern that matches a directory applies to everything under it: `--include 'Packages/x86_64'`
//     takes that directory and its content, `--exclude debug` drops every `debug` directory's content;
//   - a trailing `/` matches directories only: `Packages/x86_64/` ≡ `Packages/x86_64/**` plus the directory
//     itself (rsync's `dir/***` is read the same way);
//   - a pattern with no `/` other than a trailing one matches the name at any depth (`*.iso`, `debug/`);
//     one with a `/` inside is anchored at the tree root (`Packages/x86_64/`), and a leading `/` anchors
//     a bare name (`/repodata/` is the top-level one only);
//   - exclude wins; no include means everything.
// Patterns that can never match a clean manifest path are refused (FilterPatternError) with the fix.

/** Which entries of a version this site materializes (a lab may subscribe to one architecture). */
export type PathFilter = (relPath: string, type: ManifestEntry['type']) => boolean

/** Patterns per list (include or exclude): far more than any hand-written subscription. */
export const MAX_FILTER_PATTERNS = 1024
/** One pattern's length: a path's limit. */
export const MAX_PATTERN_BYTES = MAX_PATH_BYTES
/** Directory decisions remembered while a manifest is walked (in canonical order, so recent ones are hit). */
const DIR_CACHE_ENTRIES = 4096

/** A filter pattern that cannot be meaningful; the message names the pattern and the fix. */
export class FilterPatternError extends DeltameshError {
  static override name = 'FilterPatternError'
  constructor (readonly option: 'include' | 'exclude', readonly pattern: string, reason: string, fix: string) {
    super(`--${option} ${JSON.stringify(pattern.slice(0, 200))}: ${reason}; ${fix}`)
    this.name = 'FilterPatternError'
  }
}

export interface FilterSpec {
  include?: string[]
  exclude?: string[]
}

interface Pattern {
  /** Only directories match (a trailing `/`). */
  dirOnly: boolean
  /** Matched against the last path segment (no `/` in the body and no leading `/`). */
  anyDepth: boolean
  test: (s: string) => boolean
}

/**
 * Parses one pattern; throws FilterPatternError for one that cannot be meaningful: empty, the tree root
 * itself, `.`, `..` or empty segments (manifest paths have none), a leading `!`, a NUL, too long.
 */
export function parsePattern (option: 'include' | 'exclude', pattern: string): Pattern {
  const refuse = (reason: string, fix: string): never => { throw new FilterPatternError(option, pattern, reason, fix) }
  if (typeof pattern !== 'string') refuse('not a string', 'pass each pattern as a string')
  if (pattern.trim() === '') refuse('empty pattern', `drop it, or name a path from the tree root, e.g. --${option} 'Packages/x86_64/'`)
  if (Buffer.byteLength(pattern, 'utf8') > MAX_PATTERN_BYTES) refuse(`longer than ${MAX_PATTERN_BYTES} bytes`, 'shorten it')
  if (pattern.includes('\0')) refuse('contains a NUL byte', 'remove it')
  if (pattern.startsWith('!')) refuse('negation is not supported', option === 'include' ? "put what to leave out in --exclude (exclude wins over include)" : 'put what to keep in --include')
  let body = pattern
  const anchored = body.startsWith('/')
  if (anchored) body = body.slice(1)
  let dirOnly = false
  if (body.endsWith('/***')) { body = body.slice(0, -4); dirOnly = true } else if (body.endsWith('/')) { body = body.slice(0, -1); dirOnly = true }
  if (body === '' || body === '**' || body === '***') {
    refuse('matches the whole tree', option === 'include' ? 'omit --include: everything is the default' : 'unsubscribe instead, or exclude something narrower')
  }
  const segments = body.split('/')
  if (segments.some(s => s === '')) refuse('has an empty path segment (`//`, or a second leading or trailing `/`), which no path in a tree has', `write it as ${JSON.stringify(suggest(anchored, segments, dirOnly))}`)
  if (segments.some(s => s === '.' || s === '..')) refuse('has a `.` or `..` segment, which no path in a tree has', `write it from the tree root, e.g. ${JSON.stringify(suggest(anchored, segments.filter(s => s !== '.' && s !== '..'), dirOnly))}`)
  if (/(^|[^\\])(\\\\)*\\$/.test(body)) refuse('ends with a lone `\\` that escapes nothing', 'remove it, or escape it as `\\\\`')
  let test: (s: string) => boolean
  try {
    // flags 's': a name may hold a newline (names are bytes), and `**` must still match it
    test = picomatch(body, { dot: true, flags: 's' })
  } catch (err) {
    return refuse(`is not a valid glob (${(err as Error).message})`, 'fix its brackets or braces')
  }
  return { dirOnly, anyDepth: !anchored && !body.includes('/'), test }
}

function suggest (anchored: boolean, segments: string[], dirOnly: boolean): string {
  const body = segments.filter(s => s !== '').join('/')
  return `${anchored ? '/' : ''}${body === '' ? 'NAME' : body}${dirOnly ? '/' : ''}`
}

/** Checks every pattern of a subscription (the CLI before sending it, the agent on receiving it). */
export function validateFilter (spec: FilterSpec): void {
  compileFilter(spec)
}

/**
 * The filter of a subscription: an entry is selected when an include matches it or one of its parent
 * directories (or there is no include), and no exclude matches it or one of its parents. Undefined when
 * both lists are empty (everything). Throws FilterPatternError.
 */
export function compileFilter (spec: FilterSpec): PathFilter | undefined {
  const include = compileList('include', spec.include)
  const exclude = compileList('exclude', spec.exclude)
  if (include.length === 0 && exclude.length === 0) return undefined
  const matches = (list: Pattern[], path: string, type: ManifestEntry['type']): boolean => {
    if (list.length === 0) return false
    let name: string | undefined
    for (const p of list) {
      if (p.dirOnly && type !== 'dir') continue
      if (p.test(p.anyDepth ? (name ??= path.slice(path.lastIndexOf('/') + 1)) : path)) return true
    }
    return false
  }
  interface DirState { included: boolean, excluded: boolean }
  const root: DirState = { included: false, excluded: false }
  const dirs = new Map<string, DirState>()
  const dirState = (path: string): DirState => {
    if (path === '') return root
    const known = dirs.get(path)
    if (known !== undefined) return known
    const parent = dirState(parentOf(path))
    const state = { included: parent.included || matches(include, path, 'dir'), excluded: parent.excluded || matches(exclude, path, 'dir') }
    if (dirs.size >= DIR_CACHE_ENTRIES) dirs.clear()
    dirs.set(path, state)
    return state
  }
  return (path, type) => {
    const parent = dirState(parentOf(path))
    if (parent.excluded || matches(exclude, path, type)) return false
    return include.length === 0 || parent.included || matches(include, path, type)
  }
}

function compileList (option: 'include' | 'exclude', patterns: string[] | undefined): Pattern[] {
  if (patterns === undefined) return []
  if (!Array.isArray(patterns)) throw new FilterPatternError(option, String(patterns), 'not a list', 'pass a list of patterns')
  if (patterns.length > MAX_FILTER_PATTERNS) throw new FilterPatternError(option, String(patterns[0]), `${patterns.length} patterns, more than ${MAX_FILTER_PATTERNS}`, 'match directories (`dir/`) instead of listing files')
  return patterns.map(p => parsePattern(option, p))
}

/** `+inc -exc` for messages; 'no filter' when both are empty. */
export function describeFilter (spec: FilterSpec): string {
  const parts = [...(spec.include ?? []).map(p => `--include '${p}'`), ...(spec.exclude ?? []).map(p => `--exclude '${p}'`)]
  return parts.length === 0 ? 'no filter' : parts.join(' ')
}

/** Whether two subscriptions select the same (same lists, in any order; absent ≡ empty). */
export function sameFilter (a: FilterSpec, b: FilterSpec): boolean {
  const norm = (l: string[] | undefined): string => JSON.stringify([...new Set(l ?? [])].sort())
  return norm(a.include) === norm(b.include) && norm(a.exclude) === norm(b.exclude)
}
