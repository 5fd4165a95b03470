// A cheap first look at whether bytes can be compressed: their order-0 (byte histogram) entropy.
// Compressed or encrypted data (.deb/.rpm payloads, xz, gzip, zstd, most of an ISO of packages) sits at
// ~7.99 bits per byte; nothing at that level shrinks under brotli's order-0 coding, and the remaining
// chance — long repeats of random-looking bytes inside one 16 KiB sample — is what dedup by chunk id
// already removes across chunks. Counting 16 KiB costs about a third of brotli quality 1 on it.

/**
 * At or above this many bits per byte a sample is judged incompressible without trying brotli. 16 KiB of
 * uniform random bytes measure ~7.989 (the estimate is biased low by ~255 / (2·n·ln 2) bits); 7.95
 * leaves room for that bias and for headers inside compressed files, and is far above any text or
 * binary code (≤ 6.5).
 */
export const RANDOM_BITS_PER_BYTE = 7.95

const counts = new Uint32Array(256)

/**
 * Shannon entropy of the byte histogram of `bytes`, in bits per byte (0 for an empty array); with `step` > 1,
 * of every step-th byte only (a chunk server judges every chunk it sends, and counting every byte of a
 * 16 KiB sample was ~8 % of a serving publisher's CPU on incompressible data).
 */
export function bitsPerByte (bytes: Uint8Array, step = 1): number {
  const length = bytes.byteLength
  if (length === 0) return 0
  counts.fill(0)
  let n = 0
  for (let i = 0; i < length; i += step) {
    const b = bytes[i] as number
    counts[b] = (counts[b] as number) + 1
    n++
  }
  let h = 0
  for (let b = 0; b < 256; b++) {
    const c = counts[b] as number
    if (c !== 0) h -= c * Math.log2(c / n)
  }
  return h / n
}

/**
 * The level at which `n` bytes counted from a sparse sample look random. Uniform bytes measure about
 * 8 − 255 / (2·n·ln 2) (the estimate's bias: 0.011 at 16 Ki counted, 0.045 at 4 Ki) with a spread of a few
 * thousandths; 0.03 below that keeps random samples above the line, and RANDOM_BITS_PER_BYTE caps it.
 */
function sparseRandomLevel (n: number): number {
  return Math.min(RANDOM_BITS_PER_BYTE, 8 - 255 / (2 * n * Math.LN2) - 0.03)
}

/** Whether `bytes` (every step-th of them) look like compressed or random data (see RANDOM_BITS_PER_BYTE). */
export function looksIncompressible (bytes: Uint8Array, step = 1): boolean {
  const level = step === 1 ? RANDOM_BITS_PER_BYTE : sparseRandomLevel(Math.ceil(bytes.byteLength / step))
  return bitsPerByte(bytes, step) >= level
}
