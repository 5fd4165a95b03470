// One socket write per send instead of one per byte array.
// @libp2p/tcp writes a send's byte arrays one socket.write() each, and stops at the first that fills the
// socket's 16 KiB high-water mark. A served chunk reaches it as a Noise frame of four arrays: its 2-byte
// length, the 12-byte yamux header and the chunk (each encrypted separately) and the 16-byte tag. So every
// chunk cost three syscalls and three TCP segments, two of them tiny, and the tag waited for a 'drain'
// event (the ~52 KiB array in front of it always crosses the mark). Profiled on a publisher serving one
// subscriber, socket writes were ~11 % of its CPU. Here the arrays of a send are written corked, so Node
// hands them to the kernel in one writev, and the caller is told to wait for 'drain' only when the socket
// really holds a high-water mark of unsent bytes.
import { Socket } from 'node:net'
import type { MessageStream } from '@libp2p/interface'

type EncrypterFactory = (components: never) => {
  secureOutbound: (connection: MessageStream, options?: never) => Promise<unknown>
  secureInbound: (connection: MessageStream, options?: never) => Promise<unknown>
}

interface SendResult { sentBytes: number, canSendMore: boolean }
/** The part of @libp2p/tcp's connection we replace (its socket is public, sendData is protected). */
interface PatchableTcpConnection { socket?: unknown, sendData?: (data: Iterable<Uint8Array> & { byteLength: number }) => SendResult }

/**
 * Makes a TCP connection write each send with one writev. Returns whether it did: anything that is not
 * @libp2p/tcp's connection over a net.Socket (another transport, a newer release) is left as it is.
 */
export function coalesceSocketWrites (connection: MessageStream): boolean {
  const patchable = connection as unknown as PatchableTcpConnection
  const socket = patchable.socket
  if (!(socket instanceof Socket) || typeof patchable.sendData !== 'function') return false
  patchable.sendData = (data) => {
    socket.cork()
    try {
      for (const buf of data) socket.write(buf)
    } finally {
      socket.uncork()
    }
    // A write that crossed the mark set the socket's needDrain, so 'drain' comes when we ask to wait for it.
    return { sentBytes: data.byteLength, canSendMore: socket.writableLength < socket.writableHighWaterMark }
  }
  return true
}

/** Wraps an encrypter factory so that the raw connection it secures writes with coalesceSocketWrites. */
export function coalescedWrites<F extends EncrypterFactory> (factory: F): F {
  return ((components: never) => {
    const encrypter = factory(components)
    const outbound = encrypter.secureOutbound.bind(encrypter)
    const inbound = encrypter.secureInbound.bind(encrypter)
    encrypter.secureOutbound = async (connection, options) => {
      coalesceSocketWrites(connection)
      return await outbound(connection, options)
    }
    encrypter.secureInbound = async (connection, options) => {
      coalesceSocketWrites(connection)
      return await inbound(connection, options)
    }
    return encrypter
  }) as F
}
