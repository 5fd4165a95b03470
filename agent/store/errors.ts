// Typed errors of the local store. Callers branch on `name`; the fields carry what a log line needs.
import { DeltameshError } from '../../protocol/errors.js'

/** Another process (usually a running agent) holds the database's LOCK. */
export class StoreLockedError extends DeltameshError {
  static override name = 'StoreLockedError'
  constructor (readonly dbPath: string, options?: ErrorOptions) {
    super(`Store ${dbPath} is locked by another process (is an agent already running with this home?)`, options)
    this.name = 'StoreLockedError'
  }
}

/** The database could not be opened for another reason (corruption, permissions, missing directory). */
export class StoreOpenError extends DeltameshError {
  static override name = 'StoreOpenError'
  constructor (readonly dbPath: string, options?: ErrorOptions) {
    super(`Cannot open store ${dbPath}${causeText(options)}`, options)
    this.name = 'StoreOpenError'
  }
}

/** A chunk location refers to a root id this index does not know. */
export class UnknownRootError extends DeltameshError {
  static override name = 'UnknownRootError'
  constructor (readonly rootId: number) {
    super(`Unknown store root ${rootId}`)
    this.name = 'UnknownRootError'
  }
}

/** A value read back from the database does not decode to what its table holds: a bug or a damaged database. */
export class StoreCorruptError extends DeltameshError {
  static override name = 'StoreCorruptError'
  constructor (readonly table: string, reason: string, options?: ErrorOptions) {
    super(`Store table ${table}: ${reason}`, options)
    this.name = 'StoreCorruptError'
  }
}

function causeText (options?: ErrorOptions): string {
  const cause = options?.cause
  return cause instanceof Error ? `: ${cause.message}` : ''
}

/** A caller passed a location or chunk list the index refuses to record (bad id, path, offset or size). */
export class InvalidLocationError extends DeltameshError {
  static override name = 'InvalidLocationError'
  constructor (readonly relPath: string, reason: string) {
    super(`Invalid chunk location in ${JSON.stringify(relPath.slice(0, 200))}: ${reason}`)
    this.name = 'InvalidLocationError'
  }
}

/** A chunk of the manifest itself (or the root blob) is not in the catalog. */
export class ManifestBlobMissingError extends DeltameshError {
  static override name = 'ManifestBlobMissingError'
  constructor (readonly id: string, readonly index: number) {
    super(`Manifest chunk ${index} (${id}) is missing from the catalog`)
    this.name = 'ManifestBlobMissingError'
  }
}
