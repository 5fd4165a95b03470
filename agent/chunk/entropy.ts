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

/** Shannon entropy of the byte histogram of `bytes`, in bits per byte (0 for an empty array). */
export function bitsPerByte (bytes: Uint8Array): number {
  const n = bytes.byteLength
  if (n === 0) return 0
  counts.fill(0)
  for (let i = 0; i < n; i++) {
    const b = bytes[i] as number
    counts[b] = (counts[b] as number) + 1
  }
  let h = 0
  for (let b = 0; b < 256; b++) {
    const c = counts[b] as number
    if (c !== 0) h -= c * Math.log2(c / n)
  }
  return h / n
}

/** Whether `bytes` look like compressed or random data (see RANDOM_BITS_PER_BYTE). */
export function looksIncompressible (bytes: Uint8Array): boolean {
  return bitsPerByte(bytes) >= RANDOM_BITS_PER_BYTE
}
