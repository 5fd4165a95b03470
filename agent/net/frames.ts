// Small helpers shared by the stream protocols: length-prefixed message frames and a wake-up notifier.
import { lpStream } from '@libp2p/utils'
import type { Stream } from '@libp2p/interface'
import { decodeMessage, encodeMessage, type ErrorCode, type Message } from '../../protocol/messages.js'
import { MAX_ERROR_MESSAGE_BYTES } from '../../protocol/wire-limits.js'

export type LpStream = ReturnType<typeof lpStream>

export interface FrameStreamInit {
  /** Largest frame payload accepted from the peer. */
  maxFrameBytes: number
  /** Largest amount of unread bytes buffered before the stream is aborted (at least one frame). */
  maxBufferBytes: number
}

/** A message-level view of a stream: `read()` returns the next decoded message, or undefined at a clean end. */
export class FrameStream {
  readonly lp: LpStream
  bytesRead = 0
  bytesWritten = 0

  constructor (readonly stream: Stream, init: FrameStreamInit) {
    this.lp = lpStream(stream, { maxDataLength: init.maxFrameBytes, maxBufferSize: Math.max(init.maxBufferBytes, init.maxFrameBytes + 16) })
  }

  /** Throws InvalidMessageError for a bad frame; stream errors propagate; undefined when the peer closed its side. */
  async read (signal?: AbortSignal): Promise<Message | undefined> {
    let frame
    try {
      frame = await this.lp.read({ signal })
    } catch (err) {
      // lpStream reports a graceful remote close between frames as UnexpectedEOFError
      if ((err as Error).name === 'UnexpectedEOFError' && this.stream.remoteWriteStatus !== 'writable') return undefined
      throw err
    }
    this.bytesRead += frame.byteLength
    return decodeMessage(frame.subarray())
  }

  /** Resolves once the frame is handed to the muxer (waits for drain when its buffer is full). */
  async write (msg: Message, signal?: AbortSignal): Promise<number> {
    const bytes = encodeMessage(msg)
    await this.lp.write(bytes, { signal })
    this.bytesWritten += bytes.byteLength
    return bytes.byteLength
  }

  /**
   * Best effort: tell the peer why we give up (an ERROR frame, then a half-close so it is delivered), then
   * reset the stream. Never throws; waits at most `graceMs` for the frame to leave.
   */
  async abortWithError (code: ErrorCode, message: string, err: Error, graceMs = 1000): Promise<void> {
    try {
      let text = message
      while (Buffer.byteLength(text) > MAX_ERROR_MESSAGE_BYTES) text = text.slice(0, -16)
      this.stream.send(lpFrame(encodeMessage({ type: 'ERROR', code, message: text })))
      await this.stream.close({ signal: AbortSignal.timeout(graceMs) })
    } catch (closeErr) {
      this.stream.log.trace('could not deliver ERROR %s - %e', code, closeErr)
    }
    this.stream.abort(err)
  }
}

function lpFrame (payload: Uint8Array): Uint8Array {
  const len: number[] = []
  let n = payload.byteLength
  while (n >= 0x80) { len.push((n & 0x7f) | 0x80); n >>>= 7 }
  len.push(n)
  const out = new Uint8Array(len.length + payload.byteLength)
  out.set(len, 0)
  out.set(payload, len.length)
  return out
}

/** Lets one loop sleep until another part of the code has news for it. */
export class Notifier {
  private waiter?: { promise: Promise<void>, resolve: () => void }

  notify (): void {
    const w = this.waiter
    this.waiter = undefined
    w?.resolve()
  }

  wait (): Promise<void> {
    if (this.waiter === undefined) {
      let resolve!: () => void
      const promise = new Promise<void>(res => { resolve = res })
      this.waiter = { promise, resolve }
    }
    return this.waiter.promise
  }
}
