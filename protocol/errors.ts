// Typed errors of the wire and data formats. Tests and callers branch on `name`, never on message text.

export class DeltameshError extends Error {
  static override name = 'DeltameshError'
  constructor (message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'DeltameshError'
  }
}

/** Bytes from a peer or a file that do not decode to a valid message, manifest or envelope. */
export class InvalidMessageError extends DeltameshError {
  static override name = 'InvalidMessageError'
  constructor (message = 'Invalid message', options?: ErrorOptions) {
    super(message, options)
    this.name = 'InvalidMessageError'
  }
}

/** A path that is not a clean relative path inside a tree (.., absolute, NUL, empty segment…). */
export class InvalidPathError extends DeltameshError {
  static override name = 'InvalidPathError'
  constructor (readonly path: string, reason: string) {
    super(`Invalid path ${JSON.stringify(path.slice(0, 200))}: ${reason}`)
    this.name = 'InvalidPathError'
  }
}

/** A tree name that is not of the form seg(/seg)* with [A-Za-z0-9._-] segments. */
export class InvalidTreeNameError extends DeltameshError {
  static override name = 'InvalidTreeNameError'
  constructor (readonly tree: string, reason: string) {
    super(`Invalid tree name ${JSON.stringify(tree.slice(0, 200))}: ${reason}`)
    this.name = 'InvalidTreeNameError'
  }
}

/** An envelope whose signature does not verify under its publisher key. */
export class BadSignatureError extends DeltameshError {
  static override name = 'BadSignatureError'
  constructor (message = 'Envelope signature does not verify') {
    super(message)
    this.name = 'BadSignatureError'
  }
}

/** Bytes whose SHA-256 is not the id they were asked or offered for. */
export class ChunkHashMismatchError extends DeltameshError {
  static override name = 'ChunkHashMismatchError'
  constructor (readonly expected: string, readonly actual: string, context = '') {
    super(`Chunk hash mismatch: expected ${expected}, got ${actual}${context === '' ? '' : ` (${context})`}`)
    this.name = 'ChunkHashMismatchError'
  }
}

/** A limit from limits.ts was exceeded by input we did not produce. */
export class LimitExceededError extends InvalidMessageError {
  static override name = 'LimitExceededError'
  constructor (readonly what: string, readonly actual: number, readonly limit: number) {
    super(`${what} is ${actual}, limit is ${limit}`)
    this.name = 'LimitExceededError'
  }
}
