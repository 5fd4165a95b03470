// Every message of the chunks and heads protocols, as a discriminated union, with the one place that turns
// them into bytes and back. Pure: no I/O. A frame is one canonical msgpack array whose first element names
// the message type; decodeMessage validates every field and throws InvalidMessageError (or its subclass
// LimitExceededError) for anything a well-behaved peer would not send.
import { haveFromWire, packHaveIds, type HaveMessage } from './have.js'
import { decodeUntrusted, encodeCanonical, expectBytes, expectInt, expectString } from './codec.js'
import { InvalidMessageError, LimitExceededError } from './errors.js'
import { CHUNK_ID_BYTES, MAX_CHUNK_SIZE, MAX_ENVELOPE_BYTES } from './limits.js'
import { MAX_BATCH_RAW_BYTES, MAX_BLOCKS_PER_BATCH, MAX_DELTA_TARGET_BYTES, MAX_DELTA_WANTS, MAX_ERROR_MESSAGE_BYTES, MAX_HEADS, MAX_WANTS_PER_FRAME } from './wire-limits.js'
import { validateTreeName } from './paths.js'
import type { ChunkId } from './chunk-id.js'

/** Client → server: send me these chunks (each is answered by exactly one BLOCK or DONT_HAVE). */
export interface WantMessage { type: 'WANT', ids: ChunkId[] }

/** Server → client: the bytes of a chunk that was asked for. The receiver hashes them before trusting them. */
export interface BlockMessage { type: 'BLOCK', id: ChunkId, bytes: Uint8Array }

/** Compression codecs of a BLOCKS frame. Only one so far; the list is closed so an unknown one is rejected. */
export const BATCH_CODECS = ['br'] as const
export type BatchCodec = typeof BATCH_CODECS[number]

/**
 * Server → client, on /deltamesh/chunks/1.1.0 only: several chunks compressed together, `payload` being the
 * compression of their bytes concatenated in `entries` order. The declared sizes bound decompression (never
 * beyond their sum) and each chunk is still hashed before it is trusted.
 */
export interface BlocksMessage { type: 'BLOCKS', codec: BatchCodec, entries: Array<{ id: ChunkId, size: number }>, payload: Uint8Array }

/** Client → server on the deltas protocol: send me the deltas with these keys (see protocol/delta.ts). */
export interface DeltaWantMessage { type: 'DELTA_WANT', keys: Uint8Array[] }

/** Server → client: an encoded delta. Untrusted until its result hashes to the target file's chunks. */
export interface DeltaMessage { type: 'DELTA', key: Uint8Array, bytes: Uint8Array }

/**
 * Server → client on deltas 2.0.0: the next `count` keys asked have no delta here. One frame per run of
 * misses instead of a DONT_HAVE echoing each 32-byte key: a subscriber asks for every candidate of an image's
 * new chunks (1,409 on the bench's ISO) and most have none, which cost ~65 KB of replies in 1.0.0.
 */
export interface DeltaNoneMessage { type: 'DELTA_NONE', count: number }

/** On the haves protocol: "I now hold these chunks of tree@seq" (protocol/have.ts), sent to a direct peer. */
export interface HaveFrameMessage { type: 'HAVE', have: HaveMessage }

/** Server → client: I cannot serve this chunk (not held, or no longer readable). */
export interface DontHaveMessage { type: 'DONT_HAVE', id: ChunkId }

/** One tree as a peer holds it: its newest envelope, and whether that version is held completely. */
export interface HeadEntry {
  tree: string
  seq: number
  /** true: every chunk of this version is held (the peer can serve all of it); false: a sync is under way. */
  complete: boolean
  /** The signed envelope bytes (openEnvelope verifies them; tree and seq must match it). */
  envelope: Uint8Array
}

/** Either direction: "what I hold". `wantReply` asks the other side to answer with its own HEADS. */
export interface HeadsMessage { type: 'HEADS', heads: HeadEntry[], wantReply: boolean }

export const ERROR_CODES = ['BUSY', 'INVALID_REQUEST', 'TOO_MANY_WANTS', 'INTERNAL'] as const
export type ErrorCode = typeof ERROR_CODES[number]

/** Either direction, then the stream ends: why the sender gives up on this stream. */
export interface ErrorMessage { type: 'ERROR', code: ErrorCode, message: string }

export type Message = WantMessage | BlockMessage | BlocksMessage | DontHaveMessage | HeadsMessage | ErrorMessage | DeltaWantMessage | DeltaMessage | DeltaNoneMessage | HaveFrameMessage
export type MessageType = Message['type']

// Wire forms (arrays, so the encoding is canonical):
//   ['WANT', [id, …]]            ['BLOCK', id, bytes]        ['DONT_HAVE', id]
//   ['HEADS', [[tree, seq, complete, envelope], …], wantReply]   ['ERROR', code, message]
//   ['BLOCKS', codec, [[id, size], …], payload]   ['DELTA_WANT', [key, …]]   ['DELTA', key, bytes]
//   ['DELTA_NONE', count]   ['HAVE', tree, seq, packed ids]

function toWire (msg: Message): unknown[] {
  switch (msg.type) {
    case 'WANT': return ['WANT', msg.ids]
    case 'BLOCK': return ['BLOCK', msg.id, msg.bytes]
    case 'BLOCKS': return ['BLOCKS', msg.codec, msg.entries.map(e => [e.id, e.size]), msg.payload]
    case 'DELTA_WANT': return ['DELTA_WANT', msg.keys]
    case 'DELTA': return ['DELTA', msg.key, msg.bytes]
    case 'DELTA_NONE': return ['DELTA_NONE', msg.count]
    case 'HAVE': return ['HAVE', msg.have.tree, msg.have.seq, packHaveIds(msg.have.ids)]
    case 'DONT_HAVE': return ['DONT_HAVE', msg.id]
    case 'HEADS': return ['HEADS', msg.heads.map(h => [h.tree, h.seq, h.complete, h.envelope]), msg.wantReply]
    case 'ERROR': return ['ERROR', msg.code, msg.message]
  }
}

/**
 * Encodes one message as a frame payload. The message is validated first, so we never send what we would
 * reject ourselves (an oversize batch is a bug on our side: InvalidMessageError).
 */
export function encodeMessage (msg: Message): Uint8Array {
  const wire = toWire(msg)
  fromWire(wire)
  return encodeCanonical(wire)
}

/** Decodes and validates one untrusted frame payload. */
export function decodeMessage (bytes: Uint8Array): Message {
  return fromWire(decodeUntrusted(bytes, 'message'))
}

function expectArity (t: unknown[], n: number, what: string): void {
  if (t.length !== n) throw new InvalidMessageError(`${what}: ${t.length} fields, expected ${n}`)
}

function expectId (value: unknown, what: string): ChunkId {
  return expectBytes(value, what, CHUNK_ID_BYTES)
}

function expectTree (value: unknown, what: string): string {
  try {
    return validateTreeName(value)
  } catch (err) {
    throw new InvalidMessageError(`${what}: ${(err as Error).message}`, { cause: err })
  }
}

function expectBoolean (value: unknown, what: string): boolean {
  if (typeof value !== 'boolean') throw new InvalidMessageError(`${what}: not a boolean`)
  return value
}

function expectList (value: unknown, what: string, min: number, max: number): unknown[] {
  if (!Array.isArray(value)) throw new InvalidMessageError(`${what}: not an array`)
  if (value.length > max) throw new LimitExceededError(what, value.length, max)
  if (value.length < min) throw new InvalidMessageError(`${what}: ${value.length} entries, at least ${min} needed`)
  return value
}

// One decoder per message type. Each receives the whole frame array (its first element is the type) and
// checks the arity before anything else, so a frame of the wrong shape fails with its own type's name.
type Decoder = (t: unknown[]) => Message

function decodeWant (t: unknown[]): WantMessage {
  expectArity(t, 2, 'WANT')
  const ids = expectList(t[1], 'WANT ids', 1, MAX_WANTS_PER_FRAME).map((id, i) => expectId(id, `WANT id ${i}`))
  return { type: 'WANT', ids }
}

function decodeBlock (t: unknown[]): BlockMessage {
  expectArity(t, 3, 'BLOCK')
  const id = expectId(t[1], 'BLOCK id')
  if (t[2] instanceof Uint8Array && t[2].byteLength > MAX_CHUNK_SIZE) throw new LimitExceededError('BLOCK size', t[2].byteLength, MAX_CHUNK_SIZE)
  return { type: 'BLOCK', id, bytes: expectBytes(t[2], 'BLOCK bytes') }
}

function decodeBlocks (t: unknown[]): BlocksMessage {
  expectArity(t, 4, 'BLOCKS')
  const codec = t[1]
  if (typeof codec !== 'string' || !(BATCH_CODECS as readonly string[]).includes(codec)) {
    throw new InvalidMessageError(`BLOCKS: unknown codec ${JSON.stringify(String(codec).slice(0, 40))}`)
  }
  let total = 0
  const entries = expectList(t[2], 'BLOCKS entries', 1, MAX_BLOCKS_PER_BATCH).map((entry, i) => {
    if (!Array.isArray(entry)) throw new InvalidMessageError(`BLOCKS entry ${i}: not an array`)
    expectArity(entry, 2, `BLOCKS entry ${i}`)
    const id = expectId(entry[0], `BLOCKS entry ${i} id`)
    const size = expectInt(entry[1], `BLOCKS entry ${i} size`, 1, MAX_CHUNK_SIZE)
    total += size
    return { id, size }
  })
  if (total > MAX_BATCH_RAW_BYTES) throw new LimitExceededError('BLOCKS raw bytes', total, MAX_BATCH_RAW_BYTES)
  // a batch that does not shrink is never sent compressed, so a payload above the raw total is not honest
  const payload = expectBytes(t[3], 'BLOCKS payload', undefined, total)
  return { type: 'BLOCKS', codec: codec as BatchCodec, entries, payload }
}

function decodeDeltaWant (t: unknown[]): DeltaWantMessage {
  expectArity(t, 2, 'DELTA_WANT')
  const keys = expectList(t[1], 'DELTA_WANT keys', 1, MAX_DELTA_WANTS).map((k, i) => expectId(k, `DELTA_WANT key ${i}`))
  return { type: 'DELTA_WANT', keys }
}

function decodeDelta (t: unknown[]): DeltaMessage {
  expectArity(t, 3, 'DELTA')
  const key = expectId(t[1], 'DELTA key')
  return { type: 'DELTA', key, bytes: expectBytes(t[2], 'DELTA bytes', undefined, MAX_DELTA_TARGET_BYTES) }
}

function decodeHave (t: unknown[]): HaveFrameMessage {
  expectArity(t, 4, 'HAVE')
  return { type: 'HAVE', have: haveFromWire(t[1], t[2], t[3]) }
}

function decodeDeltaNone (t: unknown[]): DeltaNoneMessage {
  expectArity(t, 2, 'DELTA_NONE')
  return { type: 'DELTA_NONE', count: expectInt(t[1], 'DELTA_NONE count', 1, MAX_DELTA_WANTS) }
}

function decodeDontHave (t: unknown[]): DontHaveMessage {
  expectArity(t, 2, 'DONT_HAVE')
  return { type: 'DONT_HAVE', id: expectId(t[1], 'DONT_HAVE id') }
}

function decodeHeads (t: unknown[]): HeadsMessage {
  expectArity(t, 3, 'HEADS')
  const seen = new Set<string>()
  const heads = expectList(t[1], 'HEADS entries', 0, MAX_HEADS).map((entry, i) => {
    const what = `HEADS entry ${i}`
    if (!Array.isArray(entry)) throw new InvalidMessageError(`${what}: not an array`)
    expectArity(entry, 4, what)
    const tree = expectTree(entry[0], `${what} tree`)
    if (seen.has(tree)) throw new InvalidMessageError(`${what}: tree ${tree} listed twice`)
    seen.add(tree)
    return {
      tree,
      seq: expectInt(entry[1], `${what} seq`, 1, Number.MAX_SAFE_INTEGER),
      complete: expectBoolean(entry[2], `${what} complete`),
      envelope: expectBytes(entry[3], `${what} envelope`, undefined, MAX_ENVELOPE_BYTES),
    }
  })
  return { type: 'HEADS', heads, wantReply: expectBoolean(t[2], 'HEADS wantReply') }
}

function decodeError (t: unknown[]): ErrorMessage {
  expectArity(t, 3, 'ERROR')
  const code = t[1]
  if (typeof code !== 'string' || !(ERROR_CODES as readonly string[]).includes(code)) {
    throw new InvalidMessageError(`ERROR: unknown code ${JSON.stringify(String(code).slice(0, 40))}`)
  }
  return { type: 'ERROR', code: code as ErrorCode, message: expectString(t[2], 'ERROR message', MAX_ERROR_MESSAGE_BYTES) }
}

// A Map, not an object: the type comes from the peer, and a name like '__proto__' or 'toString' must not
// find anything on Object.prototype. Typed by MessageType so a new message without a decoder fails to compile.
const DECODERS = new Map<unknown, Decoder>(Object.entries({
  WANT: decodeWant,
  BLOCK: decodeBlock,
  BLOCKS: decodeBlocks,
  DELTA_WANT: decodeDeltaWant,
  DELTA: decodeDelta,
  HAVE: decodeHave,
  DELTA_NONE: decodeDeltaNone,
  DONT_HAVE: decodeDontHave,
  HEADS: decodeHeads,
  ERROR: decodeError,
} satisfies Record<MessageType, Decoder>))

function fromWire (value: unknown): Message {
  if (!Array.isArray(value) || value.length === 0) throw new InvalidMessageError('message: not a non-empty array')
  const t: unknown[] = value
  const decode = DECODERS.get(t[0])
  if (decode === undefined) throw new InvalidMessageError(`message: unknown type ${JSON.stringify(String(t[0]).slice(0, 40))}`)
  return decode(t)
}
