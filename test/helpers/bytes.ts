/** Deterministic pseudo-random bytes (xorshift32): the same on every machine, so golden values hold. */
export function pseudoRandom (length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length + 3)
  const words = new Uint32Array(bytes.buffer, 0, Math.floor(bytes.length / 4))
  let s = seed >>> 0 || 1
  for (let i = 0; i < words.length; i++) {
    s ^= s << 13; s >>>= 0
    s ^= s >>> 17
    s ^= s << 5; s >>>= 0
    words[i] = s
  }
  return bytes.subarray(0, length)
}
