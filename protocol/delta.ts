// Small-file deltas: computed once per version by the publisher (a changed file against the same path in
// the previous version), applied by every subscriber that holds that previous version. Pure: no I/O.
//
// Format: canonical msgpack ['DLT', 1, targetSize, opsSize, brotli(ops)], ops being a sequence of
//   uvarint(len·2)     + len literal bytes        (insert)
//   uvarint(len·2 + 1) + uvarint(offset in base)  (copy from the base file)
// Matching is rsync's idea without its per-client cost: the base is indexed by a rolling hash of aligned
// BLOCK-byte blocks, the target scanned at every offset, and a hit is checked byte for byte and extended
// both ways (the publisher holds both files, so no strong checksum is needed).
// A delta is untrusted on the receiving side: applyDelta bounds every size by the target size the signed
// manifest gives, and the caller hashes the result against the target file's chunk ids.
import { createHash } from 'node:crypto'
import { brotliCompressSync, brotliDecompressSync, constants } from 'node:zlib'
import { decodeUntrusted, decodeUvarint, encodeCanonical, encodeUvarint, expectBytes, expectInt, expectTuple } from './codec.js'
import { InvalidMessageError } from './errors.js'
import { MAX_DELTA_TARGET_BYTES } from './wire-limits.js'
import { chunkIdOf, idsEqual, toHex, type ChunkId } from './chunk-id.js'

/** Matching granularity: a shared run of 2·BLOCK−1 bytes is always found; a copy op costs ~5 bytes. */
const BLOCK = 16
const MUL = 0x01000193
/** MUL^(BLOCK-1) mod 2^32, to take the leaving byte out of the rolling hash. */
const MUL_OUT = (() => { let m = 1; for (let i = 0; i < BLOCK - 1; i++) m = Math.imul(m, MUL); return m >>> 0 })()
/** Ops can exceed the target only by their headers: at most one 10-byte header pair per BLOCK of output. */
const maxOpsSize = (targetSize: number): number => targetSize + Math.ceil(targetSize / BLOCK) * 20 + 64

/** A delta that is malformed or does not rebuild a file of the expected size. */
export class DeltaError extends InvalidMessageError {
  static override name = 'DeltaError'
  constructor (message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'DeltaError'
  }
}

/**
 * The name of the delta from one file content to another, both given by their chunk ids (what a manifest
 * says); a subscriber derives it from its own version and the new one without asking anybody.
 */
export function deltaKeyOf (base: ChunkId[], target: ChunkId[]): Uint8Array {
  const h = createHash('sha256').update('deltamesh/delta/1\0')
  h.update(encodeUvarint(base.length))
  for (const id of base) h.update(id)
  h.update(encodeUvarint(target.length))
  for (const id of target) h.update(id)
  return h.digest()
}

function hashAt (b: Uint8Array, p: number): number {
  let h = 0
  for (let i = 0; i < BLOCK; i++) h = (Math.imul(h, MUL) + (b[p + i] as number)) >>> 0
  return h
}

/** The smallest brotli window (2^bits − 16 bytes, bits 10..24) that holds `bytes`, so every copy within the input can be found. */
function windowBitsFor (bytes: number): number {
  let bits = constants.BROTLI_MIN_WINDOW_BITS
  while (bits < constants.BROTLI_MAX_WINDOW_BITS && (2 ** bits) - 16 < bytes) bits++
  return bits
}

/**
 * The base's aligned blocks by rolling hash, the first block of a hash kept. An open-addressing table in typed
 * arrays rather than a Map: hashes are uint32, above V8's small-integer range, so every Map key was a boxed
 * number and building the index of a 144 KiB window took most of the ~5 ms an ISO chunk delta cost.
 */
class BlockIndex {
  private readonly shift: number
  private readonly mask: number
  private readonly hashes: Int32Array
  /** Offset + 1 of the block in each slot; 0: empty. */
  private readonly offsets: Int32Array

  constructor (base: Uint8Array) {
    const blocks = Math.floor(base.byteLength / BLOCK)
    let bits = 4
    while ((1 << bits) < 2 * blocks) bits++
    this.shift = 32 - bits
    this.mask = (1 << bits) - 1
    this.hashes = new Int32Array(1 << bits)
    this.offsets = new Int32Array(1 << bits)
    const baseSize = base.byteLength
    for (let o = 0; o + BLOCK <= baseSize; o += BLOCK) {
      const h = hashAt(base, o) | 0
      let i = this.slot(h)
      while (this.offsets[i] !== 0 && this.hashes[i] !== h) i = (i + 1) & this.mask
      if (this.offsets[i] === 0) { this.hashes[i] = h; this.offsets[i] = o + 1 }
    }
  }

  /** Offset of the first base block with this hash, or -1. */
  get (hash: number): number {
    const h = hash | 0
    for (let i = this.slot(h); ; i = (i + 1) & this.mask) {
      const o = this.offsets[i] as number
      if (o === 0) return -1
      if (this.hashes[i] === h) return o - 1
    }
  }

  /** Fibonacci hashing: the rolling hash's low bits lean on the last byte, its product's high bits do not. */
  private slot (h: number): number {
    return Math.imul(h, 0x9e3779b1) >>> this.shift
  }
}

function sameBlock (a: Uint8Array, ai: number, b: Uint8Array, bi: number): boolean {
  for (let k = 0; k < BLOCK; k++) if (a[ai + k] !== b[bi + k]) return false
  return true
}

/** The raw ops rebuilding `target` from `base` (before packing). */
function deltaOps (base: Uint8Array, target: Uint8Array): Buffer {
  if (target.byteLength > MAX_DELTA_TARGET_BYTES) throw new RangeError(`delta target ${target.byteLength} bytes, limit ${MAX_DELTA_TARGET_BYTES}`)
  const index = new BlockIndex(base)
  const ops: Uint8Array[] = []
  let literalFrom = 0
  const flushLiteral = (to: number): void => {
    if (to > literalFrom) { ops.push(encodeUvarint((to - literalFrom) * 2), target.subarray(literalFrom, to)) }
  }
  // sizes in locals: a typed array's byteLength read in a loop condition costs ~14 × an index on Node 20's V8
  const targetSize = target.byteLength
  const baseSize = base.byteLength
  let p = 0
  let h = targetSize >= BLOCK ? hashAt(target, 0) : 0
  while (p + BLOCK <= targetSize) {
    const o = index.get(h)
    if (o >= 0 && sameBlock(base, o, target, p)) {
      let start = p
      let from = o
      while (start > literalFrom && from > 0 && base[from - 1] === target[start - 1]) { start--; from-- }
      let end = p + BLOCK
      let bend = o + BLOCK
      while (end < targetSize && bend < baseSize && base[bend] === target[end]) { end++; bend++ }
      flushLiteral(start)
      ops.push(encodeUvarint((end - start) * 2 + 1), encodeUvarint(from))
      literalFrom = end
      p = end
      if (p + BLOCK <= targetSize) h = hashAt(target, p)
      continue
    }
    if (p + BLOCK >= targetSize) break
    h = (Math.imul((h - Math.imul(target[p] as number, MUL_OUT)) >>> 0, MUL) + (target[p + BLOCK] as number)) >>> 0
    p++
  }
  flushLiteral(target.byteLength)
  return Buffer.concat(ops)
}

/** Packs raw ops (the format in the header) into a delta rebuilding a `targetSize`-byte target. */
export function packDelta (targetSize: number, raw: Buffer, quality: number): Uint8Array {
  // The window is sized to the ops: at its default (4 MiB) quality 9 sets up hash tables for the whole window
  // on every call, which cost ~20 ms for a 16 KiB chunk delta against ~0.3–1.7 ms with a window that just
  // holds it, for output within a few bytes (measured on this VM; 149 chunk deltas of the bench's ISO spent
  // 3 s of the publisher's CPU there).
  const packed = brotliCompressSync(raw, { params: { [constants.BROTLI_PARAM_QUALITY]: quality, [constants.BROTLI_PARAM_SIZE_HINT]: raw.byteLength, [constants.BROTLI_PARAM_LGWIN]: windowBitsFor(raw.byteLength) } })
  return encodeCanonical(['DLT', 1, targetSize, raw.byteLength, packed])
}

export function encodeDelta (base: Uint8Array, target: Uint8Array): Uint8Array {
  // once per version and file, so the slower, denser setting pays
  return packDelta(target.byteLength, deltaOps(base, target), 9)
}

/**
 * encodeDelta, or undefined when the delta would exceed `maxBytes`. For a target whose bytes are already
 * random-level (`incompressible`: compressed payloads), brotli cannot shrink the literal runs, so raw ops
 * over the limit are given up before packing and the rest are packed at brotli's fastest quality: trying the
 * 1,409 new chunks of an ISO of packages cost ~40 ms each at quality 9, nearly all of it compressing
 * literals that do not compress.
 */
export function encodeDeltaWithin (base: Uint8Array, target: Uint8Array, maxBytes: number, incompressible: boolean): Uint8Array | undefined {
  const raw = deltaOps(base, target)
  if (incompressible && raw.byteLength > maxBytes) return undefined
  const delta = packDelta(target.byteLength, raw, incompressible ? 1 : 9)
  return delta.byteLength <= maxBytes ? delta : undefined
}

/** Rebuilds the target from `base` and an untrusted delta; never allocates beyond `expectedSize`-derived bounds. */
export function applyDelta (base: Uint8Array, delta: Uint8Array, expectedSize: number): Uint8Array {
  if (!Number.isSafeInteger(expectedSize) || expectedSize < 0 || expectedSize > MAX_DELTA_TARGET_BYTES) {
    throw new DeltaError(`expected size ${expectedSize} outside [0, ${MAX_DELTA_TARGET_BYTES}]`)
  }
  if (delta.byteLength > MAX_DELTA_TARGET_BYTES + 64) throw new DeltaError(`delta of ${delta.byteLength} bytes is larger than any target`)
  let t: unknown[]
  try {
    t = expectTuple(decodeUntrusted(delta, 'delta'), 'delta', 'DLT', 1, 5)
  } catch (err) {
    throw new DeltaError((err as Error).message, { cause: err })
  }
  const targetSize = expectInt(t[2], 'delta target size', 0, MAX_DELTA_TARGET_BYTES)
  if (targetSize !== expectedSize) throw new DeltaError(`delta rebuilds ${targetSize} bytes, the manifest says ${expectedSize}`)
  const opsSize = expectInt(t[3], 'delta ops size', 0, maxOpsSize(targetSize))
  const packed = expectBytes(t[4], 'delta ops')
  let ops: Buffer
  try {
    ops = brotliDecompressSync(packed, { maxOutputLength: opsSize + 1 })
  } catch (err) {
    throw new DeltaError(`delta ops do not inflate to ${opsSize} bytes: ${(err as Error).message}`, { cause: err })
  }
  if (ops.byteLength !== opsSize) throw new DeltaError(`delta ops inflate to ${ops.byteLength} bytes, ${opsSize} declared`)
  const out = Buffer.alloc(targetSize)
  let pos = 0
  let i = 0
  const varint = (): number => {
    const r = decodeUvarint(ops, i)
    if (r === undefined) throw new DeltaError('delta ops end inside a varint')
    i += r[1]
    return r[0]
  }
  while (i < ops.byteLength) {
    const head = varint()
    const len = Math.floor(head / 2)
    if (len === 0 || pos + len > targetSize) throw new DeltaError(`delta op of ${len} bytes at ${pos} of ${targetSize}`)
    if (head % 2 === 0) {
      if (i + len > ops.byteLength) throw new DeltaError('delta literal runs past the ops')
      ops.copy(out, pos, i, i + len)
      i += len
    } else {
      const from = varint()
      if (from + len > base.byteLength) throw new DeltaError(`delta copies [${from}, ${from + len}) of a ${base.byteLength}-byte base`)
      out.set(base.subarray(from, from + len), pos)
    }
    pos += len
  }
  if (pos !== targetSize) throw new DeltaError(`delta rebuilds ${pos} of ${targetSize} bytes`)
  return out
}

/**
 * applyDelta for a target known by its chunks: the result is cut at their sizes and each piece must hash to
 * its id, else InvalidMessageError (the delta is untrusted; a wrong one costs its sender, never our tree).
 */
export function applyDeltaVerified (base: Uint8Array, delta: Uint8Array, chunks: ReadonlyArray<{ id: ChunkId, size: number }>): Uint8Array {
  const rebuilt = applyDelta(base, delta, chunks.reduce((n, c) => n + c.size, 0))
  let offset = 0
  for (const c of chunks) {
    if (!idsEqual(chunkIdOf(rebuilt.subarray(offset, offset + c.size)), c.id)) {
      throw new InvalidMessageError(`rebuilt chunk at ${offset} does not hash to ${toHex(c.id)}`)
    }
    offset += c.size
  }
  return rebuilt
}
