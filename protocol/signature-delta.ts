// Deltas against a base whose bytes are gone. A publisher whose source is edited in place (a mirror updated by
// rsync, a compose rewritten where it lies) has lost the old bytes of every changed file by the time it
// publishes, so encodeDelta has no base to index — yet every subscriber still holds them. rsync solves this by
// having each client send the signatures of its old file, and the server match the new file against them, per
// client. Here the publisher keeps the signatures itself: when it publishes a chunk it records, per aligned
// BLOCK-byte block, a rolling checksum and a 64-bit hash (rsync's pair), and when the next version changes
// the file it matches the new bytes against the previous version's signatures — once, for every subscriber.
// The result is an ordinary delta (protocol/delta.ts): copies from the base at block offsets, literals
// between. The publisher cannot check it against the base it no longer has; every subscriber rebuilds and
// hashes the result against the signed chunk ids as for any delta, so a false block match costs bytes (the
// chunk is fetched plainly), never content. Pure: no I/O.
import { encodeUvarint } from './codec.js'
import { packDelta } from './delta.js'
import { MAX_DELTA_TARGET_BYTES } from './wire-limits.js'

/**
 * Block size of signatures. An edit costs up to a block on each side of it in literals, and a signature costs
 * 12 bytes a block (1.2 % of the bytes it describes at 1 KiB); rsync's default for a 128 KiB file is 700 bytes.
 */
export const SIG_BLOCK = 1024
/** Weak checksum (4 bytes) and a 64-bit strong hash (8 bytes) per block. */
const ENTRY_BYTES = 12

/** Bytes of the signature of a `size`-byte chunk (full blocks only: a chunk's tail block is never matched). */
export function signatureBytes (size: number): number {
  return Math.floor(size / SIG_BLOCK) * ENTRY_BYTES
}

/** rsync's checksum of bytes[from, from + SIG_BLOCK): a = Σ x, b = Σ (n − i)·x, each mod 2^16. */
function weakAt (bytes: Uint8Array, from: number): { a: number, b: number } {
  let a = 0
  let b = 0
  for (let i = 0; i < SIG_BLOCK; i++) {
    const x = bytes[from + i] as number
    a += x
    b += (SIG_BLOCK - i) * x
  }
  return { a: a & 0xffff, b: b & 0xffff }
}

function writeStrong (h1: number, h2: number, out: Uint8Array, at: number): void {
  h1 = fmix32(h1)
  h2 = fmix32(h2 ^ h1)
  out[at] = h1 >>> 24; out[at + 1] = (h1 >>> 16) & 0xff; out[at + 2] = (h1 >>> 8) & 0xff; out[at + 3] = h1 & 0xff
  out[at + 4] = h2 >>> 24; out[at + 5] = (h2 >>> 16) & 0xff; out[at + 6] = (h2 >>> 8) & 0xff; out[at + 7] = h2 & 0xff
}

function fmix32 (h: number): number {
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** The signature of one chunk's bytes: an entry per full block, in order (weak and strong in one pass). */
export function signatureOf (bytes: Uint8Array): Uint8Array {
  const out = Buffer.allocUnsafe(signatureBytes(bytes.byteLength))
  const outSize = out.byteLength
  for (let block = 0, at = 0; at < outSize; block += SIG_BLOCK, at += ENTRY_BYTES) {
    let a = 0
    let b = 0
    let h1 = 0x811c9dc5
    let h2 = 0x1b873593
    for (let i = block, end = block + SIG_BLOCK; i < end; i++) {
      const x = bytes[i] as number
      a += x
      b += a // Σ (n − i)·x over the block
      h1 = Math.imul(h1 ^ x, 0x01000193)
      h2 = Math.imul(h2 ^ x, 0x5bd1e995)
    }
    out.writeUInt32BE(((b << 16) | (a & 0xffff)) >>> 0, at)
    writeStrong(h1, h2, out, at + 4)
  }
  return out
}

/** Malformed stored signatures (wrong length for their chunk): a damaged store, not a peer's doing. */
export class SignatureError extends Error {
  static override name = 'SignatureError'
  constructor (message: string) {
    super(message)
    this.name = 'SignatureError'
  }
}

/**
 * The base's blocks, found by weak checksum. Typed arrays and open addressing rather than a `Map` of arrays:
 * the target is probed at every byte offset, and weak checksums are uint32s above V8's small-integer range
 * (a boxed number per `Map` lookup).
 */
class SignatureIndex {
  readonly blocks: number
  /** Per block, in base order: its offset in the base, weak checksum and strong hash (two 32-bit lanes). */
  private readonly offsets: Int32Array
  private readonly weaks: Uint32Array
  private readonly strong1: Uint32Array
  private readonly strong2: Uint32Array
  /** The next block with the same weak checksum, in base order (−1: none). */
  private readonly sameWeak: Int32Array
  /** Slot → first block (in base order) of a weak checksum, + 1 (0: empty). */
  private readonly slots: Int32Array
  private readonly mask: number
  /** One bit per FILTER_BITS-bit fold of the weak checksums present: most target offsets stop here. */
  private readonly filter = new Uint8Array(FILTER_BYTES)

  constructor (base: ReadonlyArray<{ size: number, signature: Uint8Array }>) {
    let blocks = 0
    for (const c of base) {
      if (c.signature.byteLength !== signatureBytes(c.size)) throw new SignatureError(`a ${c.size}-byte chunk has a ${c.signature.byteLength}-byte signature`)
      blocks += c.signature.byteLength / ENTRY_BYTES
    }
    this.blocks = blocks
    this.offsets = new Int32Array(blocks)
    this.weaks = new Uint32Array(blocks)
    this.strong1 = new Uint32Array(blocks)
    this.strong2 = new Uint32Array(blocks)
    this.sameWeak = new Int32Array(blocks).fill(-1)
    let size = 16
    while (size < blocks * 2) size *= 2
    this.slots = new Int32Array(size)
    this.mask = size - 1
    let i = 0
    let chunkStart = 0
    for (const c of base) {
      const sig = c.signature
      for (let at = 0; at < sig.byteLength; at += ENTRY_BYTES, i++) {
        this.offsets[i] = chunkStart + (at / ENTRY_BYTES) * SIG_BLOCK
        this.weaks[i] = readUint32(sig, at)
        this.strong1[i] = readUint32(sig, at + 4)
        this.strong2[i] = readUint32(sig, at + 8)
      }
      chunkStart += c.size
    }
    // chains in base order: insert from the last block, each in front of the ones after it
    for (let b = blocks - 1; b >= 0; b--) {
      const fold = foldWeak(this.weaks[b] as number)
      this.filter[fold >>> 3] = (this.filter[fold >>> 3] as number) | (1 << (fold & 7))
      const slot = this.slotOf(this.weaks[b] as number)
      const head = (this.slots[slot] as number) - 1
      if (head >= 0) this.sameWeak[b] = head
      this.slots[slot] = b + 1
    }
  }

  /** The slot holding `weak`'s chain, or the empty slot where it would go. */
  private slotOf (weak: number): number {
    let slot = fmix32(weak) & this.mask
    for (;;) {
      const head = (this.slots[slot] as number) - 1
      if (head < 0 || this.weaks[head] === weak) return slot
      slot = (slot + 1) & this.mask
    }
  }

  /** The first block (in base order) with this weak checksum and strong hash, or −1. */
  find (weak: number, h1: number, h2: number): number {
    for (let b = (this.slots[this.slotOf(weak)] as number) - 1; b >= 0; b = this.sameWeak[b] as number) {
      if (this.strongIs(b, h1, h2)) return b
    }
    return -1
  }

  /** Whether the weak checksum occurs in the base at all (most offsets of a changed target: no). */
  has (weak: number): boolean {
    const fold = foldWeak(weak)
    if (((this.filter[fold >>> 3] as number) & (1 << (fold & 7))) === 0) return false
    return (this.slots[this.slotOf(weak)] as number) !== 0
  }

  offset (block: number): number { return this.offsets[block] as number }

  /** Whether a block starts right where `block` ends (it is then block + 1). */
  adjacent (block: number): boolean {
    const next = block + 1
    return next < this.blocks && this.offsets[next] === (this.offsets[block] as number) + SIG_BLOCK
  }

  strongIs (block: number, h1: number, h2: number): boolean {
    return this.strong1[block] === h1 && this.strong2[block] === h2
  }
}

const FILTER_BITS = 20
const FILTER_BYTES = (1 << FILTER_BITS) / 8

/** The weak checksum folded to FILTER_BITS bits. Its low half (a byte sum) varies little, its high half well. */
function foldWeak (weak: number): number {
  return ((weak >>> 12) ^ weak) & ((1 << FILTER_BITS) - 1)
}

function readUint32 (b: Uint8Array, at: number): number {
  return ((b[at] as number) << 24 | (b[at + 1] as number) << 16 | (b[at + 2] as number) << 8 | (b[at + 3] as number)) >>> 0
}

/** Strong hash lanes of the last strongLanes() call (two numbers without an allocation per probe). */
let lane1 = 0
let lane2 = 0

/**
 * A 64-bit hash of bytes[from, from + SIG_BLOCK) in two 32-bit lanes (FNV-1a with two primes and bases, each
 * finished by murmur3's fmix32). Not SHA-256: a createHash per 1 KiB block ran at 68 MB/s here, slower than
 * chunking, and signatures of every published small file are computed on the publish path; this runs at
 * several hundred MB/s. A false match needs the weak checksum and both lanes to collide (~2^-64 per weak
 * hit), and even then costs only a delta the subscribers reject (the chunk is fetched plainly).
 Left in lane1 and lane2, as signatureOf writes them.
 */
function strongLanes (bytes: Uint8Array, from: number): void {
  let h1 = 0x811c9dc5
  let h2 = 0x1b873593
  for (let i = from, end = from + SIG_BLOCK; i < end; i++) {
    const x = bytes[i] as number
    h1 = Math.imul(h1 ^ x, 0x01000193)
    h2 = Math.imul(h2 ^ x, 0x5bd1e995)
  }
  h1 = fmix32(h1)
  lane1 = h1
  lane2 = fmix32(h2 ^ h1)
}

/**
 * A delta rebuilding `target` from a base known only by its chunks' signatures (`base`: each chunk's size and
 * signature, in the base's order), or undefined when it would exceed `maxBytes` (or there is nothing to match).
 * Blocks are matched at every offset of the target, as rsync's sender does; a match is extended block by block
 * while the next base block matches the next target block, so a long unchanged run costs one copy op.
 */
export function encodeDeltaFromSignatures (base: ReadonlyArray<{ size: number, signature: Uint8Array }>, target: Uint8Array, maxBytes: number): Uint8Array | undefined {
  if (target.byteLength > MAX_DELTA_TARGET_BYTES) throw new RangeError(`delta target ${target.byteLength} bytes, limit ${MAX_DELTA_TARGET_BYTES}`)
  const index = new SignatureIndex(base)
  if (index.blocks === 0 || target.byteLength < SIG_BLOCK) return undefined

  const ops: Uint8Array[] = []
  let opsBytes = 0
  const push = (...parts: Uint8Array[]): void => { for (const p of parts) { ops.push(p); opsBytes += p.byteLength } }
  let literalFrom = 0
  let copies = 0
  const flushLiteral = (to: number): void => {
    if (to > literalFrom) push(encodeUvarint((to - literalFrom) * 2), target.subarray(literalFrom, to))
  }
  // the size in a local: a typed array's byteLength read in a loop condition costs ~14 × an index on Node 20's V8
  const targetSize = target.byteLength
  let p = 0
  let { a, b } = weakAt(target, 0)
  while (p + SIG_BLOCK <= targetSize) {
    const weak = ((b << 16) | a) >>> 0
    let matched = -1
    if (index.has(weak)) {
      strongLanes(target, p)
      matched = index.find(weak, lane1, lane2)
    }
    if (matched >= 0) {
      let end = p + SIG_BLOCK
      let last = matched
      // the following blocks usually follow in the base too: check them by strong hash alone
      while (end + SIG_BLOCK <= targetSize && index.adjacent(last)) {
        strongLanes(target, end)
        if (!index.strongIs(last + 1, lane1, lane2)) break
        end += SIG_BLOCK
        last++
      }
      flushLiteral(p)
      push(encodeUvarint((end - p) * 2 + 1), encodeUvarint(index.offset(matched)))
      copies++
      literalFrom = end
      p = end
      if (opsBytes > 2 * maxBytes + 64) return undefined
      if (p + SIG_BLOCK <= targetSize) ({ a, b } = weakAt(target, p))
      continue
    }
    if (p + SIG_BLOCK >= targetSize) break
    // roll one byte: drop x_out, take x_in
    const out = target[p] as number
    const inn = target[p + SIG_BLOCK] as number
    a = (a - out + inn) & 0xffff
    b = (b - SIG_BLOCK * out + a) & 0xffff
    p++
  }
  flushLiteral(target.byteLength)
  if (copies === 0) return undefined // nothing matched: the plain chunks are as good
  const raw = Buffer.concat(ops)
  const delta = packDelta(target.byteLength, raw, 9)
  return delta.byteLength <= maxBytes ? delta : undefined
}
