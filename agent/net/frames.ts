// Length-prefixed message frames over a libp2p v3 stream, and a wake-up notifier.
// Reading is event-driven: every 'message' event is fed to a LengthPrefixedDecoder synchronously, so a
// frame costs no per-byte awaits (lpStream reads the varint one byte at a time). Frames a peer sends ahead
// of our reading are queued up to maxBufferBytes; beyond that the peer broke its window and the stream ends.
// Frame lengths are read by frameLength below, not by the decoder's default varint reader (see there why).
import { LengthPrefixedDecoder } from '@libp2p/utils'
import type { Stream, StreamCloseEvent, StreamMessageEvent } from '@libp2p/interface'
import { Uint8ArrayList } from 'uint8arraylist'
import { decodeMessage, encodeMessage, type ErrorCode, type Message } from '../../protocol/messages.js'
import { encodeFrame, type EncodedFrame } from '../../protocol/frame-encode.js'
import { InvalidMessageError, LimitExceededError } from '../../protocol/errors.js'
import { encodeUvarint } from '../../protocol/codec.js'
import { MAX_ERROR_MESSAGE_BYTES } from '../../protocol/wire-limits.js'
import { DeltameshError } from '../../protocol/errors.js'

export interface FrameStreamInit {
  /** Largest frame payload accepted from the peer. */
  maxFrameBytes: number
  /** Largest amount of received, not yet read frame bytes before the stream is aborted (at least one frame). */
  maxBufferBytes: number
}

/** The stream ended in the middle of a frame. */
export class TruncatedFrameError extends DeltameshError {
  static override name = 'TruncatedFrameError'
  constructor (message = 'Stream ended inside a frame') {
    super(message)
    this.name = 'TruncatedFrameError'
  }
}

/** A frame ready to send: `frame` is what crosses the wire, `payloadBytes` the message without its length prefix. */
export type { EncodedFrame }

/** A decoded frame payload as the decoder yields it (a Uint8ArrayList). */
interface FramePayload { byteLength: number, subarray (): Uint8Array }

/** What a LengthPrefixedDecoder hands its length decoder: bytes, or its buffer (a list of byte arrays). */
type Buffered = Parameters<LengthPrefixedDecoder['decode']>[0]

/** Longest uvarint length prefix: 8 bytes (56 bits) is far beyond any frame limit, and what uint8-varint reads. */
const MAX_LENGTH_PREFIX_BYTES = 8

/** Thrown, never built: the decoder takes any RangeError as "need more bytes" and stops until the next read. */
const NEED_MORE_BYTES = new RangeError('frame length: prefix incomplete')

/**
 * The uvarint length prefix at the start of `data`. The decoder asks for the next length after every frame,
 * so at the end of nearly every received batch its buffer is empty or holds part of a frame. uint8-varint's
 * reader then fails inside Uint8ArrayList.get, which builds a RangeError with a stack trace: profiled on a
 * publisher answering one WANT frame per delivered chunk, that was ~4 % of its CPU (the same fault as in
 * noise, noise-frames.ts). This reader walks the list's arrays once and throws one preallocated RangeError;
 * a prefix longer than any the decoder could use is the peer's fault, a plain error (→ InvalidMessageError).
 */
export function frameLength (data: Buffered): number {
  let value = 0
  let scale = 1
  let read = 0
  for (const buf of data instanceof Uint8Array ? [data] : data) {
    for (let i = 0; i < buf.byteLength; i++) {
      const b = buf[i] as number
      value += (b & 0x7f) * scale
      if (b < 0x80) {
        // an overlong form would be framed at the wrong offset (the decoder skips encodingLength(value) bytes)
        if (b === 0 && read > 0) throw new Error('overlong frame length prefix')
        return value
      }
      if (++read === MAX_LENGTH_PREFIX_BYTES) throw new Error(`frame length prefix longer than ${MAX_LENGTH_PREFIX_BYTES} bytes`)
      scale *= 0x80
    }
  }
  throw NEED_MORE_BYTES
}

/** Bytes of the uvarint encoding of n (n ≥ 0), without building it. */
function uvarintBytes (n: number): number {
  let bytes = 1
  while (n >= 0x80) { n = Math.floor(n / 0x80); bytes++ }
  return bytes
}

function withLengthPrefix (payload: Uint8Array): Uint8Array {
  const len = encodeUvarint(payload.byteLength)
  const out = new Uint8Array(len.byteLength + payload.byteLength)
  out.set(len, 0)
  out.set(payload, len.byteLength)
  return out
}

/** A message-level view of a stream: `read()` returns the next decoded message, or undefined at a clean end. */
export class FrameStream {
  bytesRead = 0
  bytesWritten = 0
  private readonly decoder: LengthPrefixedDecoder
  private readonly maxBufferBytes: number
  private readonly maxFrameBytes: number
  private readonly frames: Array<FramePayload | undefined> = []
  private head = 0
  private queuedBytes = 0
  /** Received bytes not yet part of a complete frame. */
  private partial = 0
  private ended = false
  private error?: Error
  private wake?: () => void

  constructor (readonly stream: Stream, init: FrameStreamInit) {
    this.maxFrameBytes = init.maxFrameBytes
    this.maxBufferBytes = Math.max(init.maxBufferBytes, init.maxFrameBytes)
    // one message event may carry many whole frames (a muxer batch): the decoder must take it all at once;
    // our own queue limit below is what bounds memory
    this.decoder = new LengthPrefixedDecoder({
      maxDataLength: init.maxFrameBytes,
      maxBufferSize: this.maxBufferBytes + init.maxFrameBytes + 16,
      lengthDecoder: frameLength,
      encodingLength: uvarintBytes,
    })
    stream.addEventListener('message', this.onMessage)
    stream.addEventListener('remoteCloseWrite', this.onEnd)
    stream.addEventListener('close', this.onClose)
  }

  private readonly onMessage = (evt: StreamMessageEvent): void => {
    if (this.error !== undefined) return
    try {
      this.partial += evt.data.byteLength
      for (const frame of this.decoder.decode(evt.data)) {
        this.frames.push(frame)
        this.queuedBytes += frame.byteLength
        this.partial -= frame.byteLength + uvarintBytes(frame.byteLength)
      }
      if (this.queuedBytes > this.maxBufferBytes) throw new LimitExceededError('unread frame bytes', this.queuedBytes, this.maxBufferBytes)
    } catch (err) {
      // the decoder throws a plain error for an oversize length prefix: that is the peer's fault, a limit
      this.error = err instanceof LimitExceededError ? err : new InvalidMessageError(`frame: ${(err as Error).message} (limit ${this.maxFrameBytes} bytes)`, { cause: err })
      this.frames.length = 0
      this.head = 0
    }
    this.notify()
  }

  private readonly onEnd = (): void => {
    this.ended = true
    this.notify()
  }

  private readonly onClose = (evt: StreamCloseEvent): void => {
    this.ended = true
    if (evt.error !== undefined && this.error === undefined) this.error = evt.error
    this.notify()
  }

  private notify (): void {
    const w = this.wake
    this.wake = undefined
    w?.()
  }

  /**
   * The next message. Throws InvalidMessageError (or LimitExceededError) for a bad or oversize frame,
   * TruncatedFrameError for a stream that ends inside a frame, the stream's error for a reset;
   * undefined when the peer closed its side cleanly between frames.
   */
  async read (signal?: AbortSignal): Promise<Message | undefined> {
    for (;;) {
      if (this.head < this.frames.length) {
        const frame = this.frames[this.head] as FramePayload
        this.frames[this.head++] = undefined
        if (this.head === this.frames.length) { this.frames.length = 0; this.head = 0 }
        this.queuedBytes -= frame.byteLength
        this.bytesRead += frame.byteLength
        return decodeMessage(frame.subarray())
      }
      if (this.error !== undefined) throw this.error
      if (this.ended) {
        if (this.partial > 0) throw new TruncatedFrameError()
        return undefined
      }
      signal?.throwIfAborted()
      await new Promise<void>((resolve, reject) => {
        const onAbort = (): void => reject(signal?.reason)
        signal?.addEventListener('abort', onAbort, { once: true })
        this.wake = () => { signal?.removeEventListener('abort', onAbort); resolve() }
      })
    }
  }

  /** Resolves once the frame is handed to the muxer (waits for drain when its buffer is full). */
  async write (msg: Message, signal?: AbortSignal): Promise<number> {
    return await this.writeEncoded(this.encode(msg), signal)
  }

  /** A message as it will cross the wire: length prefix and payload (so its size can be paced first). */
  encode (msg: Message): EncodedFrame {
    return encodeFrame(msg)
  }

  /** Writes a frame from encode(); returns its payload size (what bytesWritten and the counters count). */
  async writeEncoded (encoded: EncodedFrame, signal?: AbortSignal): Promise<number> {
    const data = encoded.parts.length === 1 ? encoded.parts[0] as Uint8Array : new Uint8ArrayList(...encoded.parts)
    if (!this.stream.send(data)) await this.stream.onDrain({ signal })
    this.bytesWritten += encoded.payloadBytes
    return encoded.payloadBytes
  }

  /**
   * Best effort: tell the peer why we give up (an ERROR frame, then a half-close so it is delivered), then
   * reset the stream. Never throws; waits at most `graceMs` for the frame to leave.
   */
  async abortWithError (code: ErrorCode, message: string, err: Error, graceMs = 1000): Promise<void> {
    try {
      let text = message
      while (Buffer.byteLength(text) > MAX_ERROR_MESSAGE_BYTES) text = text.slice(0, -16)
      const payload = encodeMessage({ type: 'ERROR', code, message: text })
      this.stream.send(withLengthPrefix(payload))
      await this.stream.close({ signal: AbortSignal.timeout(graceMs) })
    } catch (closeErr) {
      this.stream.log.trace('could not deliver ERROR %s - %e', code, closeErr)
    }
    this.stream.abort(err)
  }

  /** Largest frame this stream accepts (for callers sizing their own buffers). */
  get frameLimit (): number { return this.maxFrameBytes }
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
