import { fstatSync, readSync } from 'node:fs'
import { chunkIdOf, idsEqual } from '../../protocol/chunk-id.js'
import type { SerializedError } from '../core/workers.js'
import { ReadFiles, readHashes, runFsOp, type FsOp, type FsOpResult } from './fs-batch-ops.js'
import { settled, stampOf, vouches } from './file-stamp.js'

// The steps of one FsBatch message, with the chunk reads that follow each other in one file read together:
// a server answering a subscriber's first sync reads a file's chunks in order, ~20 per MB, and each read
// was a pread and an ArrayBuffer of its own, transferred back alone. Now one pread and one buffer per run
// (up to MAX_RUN_BYTES), each chunk a view of it: fewer syscalls, buffers and transfers per MB (the bytes
// allocated stay the same, and with them V8's external-memory GCs: docs/design-notes.md, issue 17). Each chunk keeps its own outcome (stamp vouching, hash check),
// exactly as when read alone; a run that cannot be read whole (short file, error) is read chunk by chunk.

type ReadOp = Extract<FsOp, { type: 'read' }>

/** A run is cut at this many bytes (a whole run stays in memory until its last chunk is sent). */
export const MAX_RUN_BYTES = 4 * 1024 * 1024

/** Runs the steps in order (like runFsOp on each), reading runs of adjacent chunk reads in one piece. */
export function runFsOps (ops: FsOp[], serialize: (err: unknown) => SerializedError, files: ReadFiles): FsOpResult[] {
  const results: FsOpResult[] = []
  let i = 0
  while (i < ops.length) {
    const end = runEnd(ops, i)
    const run = end - i > 1 ? readRun(ops.slice(i, end) as ReadOp[], files) : undefined
    if (run !== undefined) results.push(...run)
    else for (let k = i; k < end; k++) results.push(runFsOp(ops[k] as FsOp, serialize, files))
    i = end
  }
  return results
}

/** Index after the run of reads that starts at `start` (each chunk right after the one before, same file). */
function runEnd (ops: FsOp[], start: number): number {
  const first = ops[start] as FsOp
  if (first.type !== 'read') return start + 1
  let bytes = first.size
  let end = start + 1
  for (; end < ops.length; end++) {
    const next = ops[end] as FsOp
    const prev = ops[end - 1] as ReadOp
    if (next.type !== 'read' || next.path !== first.path || next.offset !== prev.offset + prev.size || bytes + next.size > MAX_RUN_BYTES) break
    bytes += next.size
  }
  return end
}

/** The run's outcomes, or undefined when it could not be read whole (then each chunk is read alone). */
function readRun (run: ReadOp[], files: ReadFiles): FsOpResult[] | undefined {
  const first = run[0] as ReadOp
  let total = 0
  for (const op of run) total += op.size
  try {
    const fd = files.fd(first.path)
    // its own ArrayBuffer (not the pool's), so that it can be transferred to the caller's thread
    const buffer = Buffer.allocUnsafeSlow(total)
    let filled = 0
    while (filled < total) {
      const n = readSync(fd, buffer, filled, total - filled, first.offset + filled)
      if (n === 0) break
      filled += n
    }
    if (filled < total) { files.drop(first.path); return undefined }
    // after the read, as for a single chunk (fs-batch-ops.ts readSyncChecked)
    const stamp = stampOf(fstatSync(fd, { bigint: true }))
    const stampSettled = settled(stamp, Date.now())
    let at = 0
    let mismatch = false
    const results = run.map((op): FsOpResult => {
      const bytes = buffer.subarray(at, at + op.size)
      at += op.size
      if (vouches(op.stamp, stamp, op.id)) return { ok: true, value: { kind: 'ok', bytes, hashed: false } }
      readHashes.count++
      if (!idsEqual(chunkIdOf(bytes), op.id)) { mismatch = true; return { ok: true, value: { kind: 'mismatch' } } }
      return { ok: true, value: stampSettled ? { kind: 'ok', bytes, hashed: true, stamp } : { kind: 'ok', bytes, hashed: true } }
    })
    if (mismatch) files.drop(first.path)
    return results
  } catch {
    files.drop(first.path)
    return undefined
  }
}
