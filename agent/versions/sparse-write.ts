import type { FileHandle } from 'node:fs/promises'
import { writeAt } from '../fs/fs-safe.js'
import { isAllZero } from '../chunk/zeros.js'

// Writing the data chunks of a sparse file (issue 23). Its holes are whole chunks, but a data chunk is cut where
// the bytes say, so the chunks at the edges of a data region carry up to a chunk of zeros beside the data; written
// as they are, those zeros take blocks the source does not (each region costs up to two maxSize chunks of disk).
// rsync -S seeks over zero runs as it writes; here the blocks of such a chunk that are all zero are left
// unwritten: the file was sized with ftruncate, so they read as zeros and stay holes.

/** The filesystem block the holes are made of (ext4, xfs, btrfs and tmpfs all use 4 KiB on x86-64). */
const BLOCK = 4096

/**
 * Writes `bytes` at `offset`, leaving out every BLOCK-aligned block (aligned to the file) that is all zero.
 * Only for a file created in this build and sized beforehand: a block left out must already read as zeros.
 */
export async function writeSkippingZeroBlocks (handle: FileHandle, bytes: Uint8Array, offset: number): Promise<void> {
  const n = bytes.byteLength
  let runStart = -1
  let p = 0
  while (p < n) {
    const end = Math.min(n, (Math.floor((offset + p) / BLOCK) + 1) * BLOCK - offset)
    const zero = isAllZero(bytes.subarray(p, end))
    if (!zero && runStart < 0) runStart = p
    if (zero && runStart >= 0) { await writeAt(handle, bytes.subarray(runStart, p), offset + runStart); runStart = -1 }
    p = end
  }
  if (runStart >= 0) await writeAt(handle, bytes.subarray(runStart), offset + runStart)
}
