// Errors of the local control API and their mapping to HTTP status codes. The mapping lives here, in one
// place: the server turns any thrown error into `{error:{name,message}}` with `httpStatusOf(err)`, and the
// client turns such a body back into an Error carrying the same `name`.

import { DeltameshError } from '../../protocol/errors.js'

/** A control request that is malformed: bad JSON, a field of the wrong type, a missing parameter. */
export class BadRequestError extends DeltameshError {
  static override name = 'BadRequestError'
  constructor (message = 'Bad request') {
    super(message)
    this.name = 'BadRequestError'
  }
}

/** A control request body larger than MAX_CONTROL_BODY_BYTES. */
export class RequestTooLargeError extends DeltameshError {
  static override name = 'RequestTooLargeError'
  constructor (readonly limit: number) {
    super(`request body exceeds ${limit} bytes`)
    this.name = 'RequestTooLargeError'
  }
}

/** No such endpoint, or the wrong method for it. */
export class UnknownEndpointError extends DeltameshError {
  static override name = 'UnknownEndpointError'
  constructor (readonly method: string, readonly path: string) {
    super(`no control endpoint ${method} ${path.slice(0, 200)}`)
    this.name = 'UnknownEndpointError'
  }
}

/** Another agent already answers on this home's control socket. */
export class AgentRunningError extends DeltameshError {
  static override name = 'AgentRunningError'
  constructor (readonly socketPath: string, readonly pid?: number) {
    super(`agent already running (pid ${pid ?? 'unknown'}) on ${socketPath}`)
    this.name = 'AgentRunningError'
  }
}

/** An error reported by the agent across the socket; `name` is the agent-side error's name. */
export class RemoteError extends Error {
  constructor (name: string, message: string, readonly status: number) {
    super(message)
    this.name = name
  }
}

/** The one place where error names become HTTP status codes. */
export function httpStatusOf (err: unknown): number {
  const name = err instanceof Error ? err.name : ''
  switch (name) {
    case 'BadRequestError':
    case 'InvalidTreeNameError':
    case 'InvalidPathError':
    case 'FilterPatternError':
    case 'ConfigError':
    case 'InvalidInputError':
    case 'RateParseError':
    case 'RangeError':
    case 'PeerInNamedLinkError':
    case 'LimitRequestError':
    case 'CommandLineError':
      return 400
    case 'VersionDiffError':
    case 'AcceptError':
      return 409
    case 'PeerAddressError':
      return 400
    case 'UnknownPeerError':
      return 404
    case 'UnknownLinkError':
      return 404
    case 'UnknownEndpointError':
      return 404
    case 'RequestTooLargeError':
      return 413
    case 'AbortError':
      return 499 // the client went away (nginx's convention); nobody reads it, but logs do
    default:
      return /NotFound/.test(name) ? 404 : 500
  }
}

/** `{name,message}` of anything thrown; plain `Error`s keep the name `Error`. */
export function errorBody (err: unknown): { name: string, message: string } {
  if (err instanceof Error) return { name: err.name, message: err.message }
  return { name: 'Error', message: String(err) }
}

/** Nothing answers on the control socket (no socket file, or nobody listening on it). */
export class AgentNotRunningError extends DeltameshError {
  static override name = 'AgentNotRunningError'
  constructor (readonly socketPath: string, readonly home: string) {
    super(`agent not running: start it with \`deltamesh agent --home ${home}\``)
    this.name = 'AgentNotRunningError'
  }
}
