import { DeltameshError } from '../../protocol/errors.js'

// Typed errors of building, flipping and pruning versions. Callers branch on `name`; every error carries
// the tree and seq it is about, and the relative path when one is involved.

/** Where in a version an error happened. */
export interface VersionContext {
  tree: string
  seq: number
  path?: string
}

function where (c: VersionContext): string {
  return `${c.tree}@${c.seq}${c.path === undefined ? '' : ` at ${JSON.stringify(c.path)}`}`
}

/** An error about one version (and possibly one path in it): carries where it happened. */
export class VersionError extends DeltameshError {
  static override name = 'VersionError'
  readonly tree: string
  readonly seq: number
  readonly path: string | undefined
  constructor (context: VersionContext, message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'VersionError'
    this.tree = context.tree
    this.seq = context.seq
    this.path = context.path
  }
}

/** The manifest of a version is missing a blob, does not decode, or violates its structure (hostile or broken). */
export class ManifestError extends VersionError {
  static override name = 'ManifestError'
  constructor (context: VersionContext, reason: string, options?: ErrorOptions) {
    super(context, `Bad manifest for ${where(context)}: ${reason}`, options)
    this.name = 'ManifestError'
  }
}

/** finalize() was called while chunks of the plan are still missing. */
export class MissingChunksError extends VersionError {
  static override name = 'MissingChunksError'
  constructor (context: VersionContext, readonly missingChunks: number, readonly missingBytes: number) {
    super(context, `Cannot finalize ${where(context)}: ${missingChunks} chunks (${missingBytes} bytes) still missing`)
    this.name = 'MissingChunksError'
  }
}

/** The disk filled up while materializing. Staging is kept for a later resume; the previous version is untouched. */
export class DiskFullError extends VersionError {
  static override name = 'DiskFullError'
  constructor (context: VersionContext, options?: ErrorOptions) {
    super(context, `Disk full while materializing ${where(context)}; staging kept for a resume, previous version untouched`, options)
    this.name = 'DiskFullError'
  }
}

/** Something in the staging directory is not what we created (or a file vanished), so we refuse to write through it. */
export class StagingError extends VersionError {
  static override name = 'StagingError'
  constructor (context: VersionContext, reason: string, options?: ErrorOptions) {
    super(context, `Staging of ${where(context)}: ${reason}`, options)
    this.name = 'StagingError'
  }
}

/** The version is complete but a link (the tree's current link or a subscription path) could not be flipped. */
export class LinkFlipError extends DeltameshError {
  static override name = 'LinkFlipError'
  constructor (readonly tree: string, readonly seq: number, readonly linkPath: string, options?: ErrorOptions) {
    super(`Could not point ${linkPath} at ${tree}@${seq}`, options)
    this.name = 'LinkFlipError'
  }
}

/** A method was called out of order (fill before prepare, finalize twice…). */
export class MaterializerStateError extends DeltameshError {
  static override name = 'MaterializerStateError'
  constructor (message: string) {
    super(message)
    this.name = 'MaterializerStateError'
  }
}

/** What a subscription's filter selected of a version, against the version served now. */
export interface SelectionCounts {
  /** Regular files of the version the filter selects, and all its regular files. */
  selected: number
  total: number
  /** The version served now (its files as materialized), when one is. */
  previousSeq?: number
  previousFiles?: number
}

/**
 * A version (or the current one rebuilt for a changed filter) that would empty the mirror, or drop more of
 * its files than the subscription allows: not installed, the previous version stays served. Not retried
 * until the subscription or the version changes.
 */
export class SelectionRefusedError extends VersionError {
  static override name = 'SelectionRefusedError'
  constructor (context: VersionContext, readonly reason: 'empty' | 'drop', readonly filter: string, readonly counts: SelectionCounts, readonly maxDropPercent: number, readonly mirror?: string) {
    super(context, selectionMessage(context, reason, filter, counts, maxDropPercent, mirror))
    this.name = 'SelectionRefusedError'
  }
}

function selectionMessage (c: VersionContext, reason: 'empty' | 'drop', filter: string, n: SelectionCounts, maxDropPercent: number, mirror: string | undefined): string {
  const served = n.previousSeq === undefined
    ? 'nothing was installed'
    : `v${n.previousSeq} (${n.previousFiles ?? '?'} files) stays served${mirror === undefined ? '' : ` at ${mirror}`}`
  const what = `${filter === 'no filter' ? 'the version (no filter)' : `the filter (${filter})`} selects ${n.selected} of its ${n.total} files`
  if (reason === 'empty') {
    return `Refused ${c.tree}@${c.seq}: ${what}; ${served}. Fix the patterns (subscribe again with other --include/--exclude), or subscribe with --allow-empty if an empty mirror is intended`
  }
  const drop = n.previousFiles === undefined || n.previousFiles === 0 ? 0 : Math.round(100 * (n.previousFiles - n.selected) / n.previousFiles)
  return `Refused ${c.tree}@${c.seq}: ${what}, ${drop} % fewer than the ${n.previousFiles ?? '?'} of v${n.previousSeq ?? '?'}, more than --max-drop ${maxDropPercent}%; ${served}. Subscribe again with --max-drop 100% to accept the drop`
}
