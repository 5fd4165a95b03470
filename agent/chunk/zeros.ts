// All-zero runs of sparse files (issue 23): a chunk of a sparse file whose bytes are all zero is recorded as a
// hole (protocol/manifest.ts HOLE_CHUNK_ID) instead of a SHA-256 of its zeros. The test runs on every chunk of a
// sparse file, so it must cost nothing on data: the first and last bytes reject almost every data chunk at once,
// and a zero run is compared against a preallocated zero buffer with Buffer.compare (a native memcmp).

/** Compared against in pieces; larger runs loop (every chunk is at most MAX_CHUNK_SIZE anyway). */
const ZERO = Buffer.alloc(64 * 1024)

/** True when every byte of `bytes` is zero (true for an empty array). */
export function isAllZero (bytes: Uint8Array): boolean {
  const n = bytes.byteLength
  if (n === 0) return true
  if (bytes[0] !== 0 || bytes[n - 1] !== 0) return false
  for (let p = 0; p < n; p += ZERO.byteLength) {
    const len = Math.min(ZERO.byteLength, n - p)
    if (Buffer.compare(bytes.subarray(p, p + len), ZERO.subarray(0, len)) !== 0) return false
  }
  return true
}

/** Feeds `count` zero bytes to `update` (a hash), in pieces of the shared zero buffer. */
export function feedZeros (update: (bytes: Uint8Array) => unknown, count: number): void {
  for (let left = count; left > 0; left -= ZERO.byteLength) update(ZERO.subarray(0, Math.min(left, ZERO.byteLength)))
}
