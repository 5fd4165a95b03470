// Typed errors of the network layer. Callers branch on `name` (or the `reason` of a fetch failure).
import { DeltameshError } from '../../protocol/errors.js'
import type { ErrorCode } from '../../protocol/messages.js'

/** The peer sent no frame for too long while requests were outstanding. */
export class PeerStalledError extends DeltameshError {
  static override name = 'PeerStalledError'
  constructor (readonly peerId: string, readonly idleMs: number) {
    super(`Peer ${peerId} sent nothing for ${idleMs} ms with requests outstanding`)
    this.name = 'PeerStalledError'
  }
}

/** The stream or connection to the peer ended while requests were outstanding. */
export class PeerDisconnectedError extends DeltameshError {
  static override name = 'PeerDisconnectedError'
  constructor (readonly peerId: string, message = `Stream to ${peerId} ended`, options?: ErrorOptions) {
    super(message, options)
    this.name = 'PeerDisconnectedError'
  }
}

/** We could not open a stream to the peer (not connected, dial denied, protocol unsupported). */
export class PeerUnreachableError extends DeltameshError {
  static override name = 'PeerUnreachableError'
  constructor (readonly peerId: string, options?: ErrorOptions) {
    super(`Cannot open a stream to ${peerId}`, options)
    this.name = 'PeerUnreachableError'
  }
}

/** The peer answered with an ERROR frame. */
export class RemoteError extends DeltameshError {
  static override name = 'RemoteError'
  constructor (readonly peerId: string, readonly code: ErrorCode, message: string) {
    super(`Peer ${peerId} refused: ${code} ${message}`)
    this.name = 'RemoteError'
  }
}

/** The peer broke the protocol (unrequested block, wrong message type, undecodable frame). */
export class ProtocolViolationError extends DeltameshError {
  static override name = 'ProtocolViolationError'
  constructor (readonly peerId: string, reason: string, options?: ErrorOptions) {
    super(`Peer ${peerId}: ${reason}`, options)
    this.name = 'ProtocolViolationError'
  }
}
