import { closeSync, lstatSync, openSync, readlinkSync, readSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { join } from 'node:path'
import { parentPort } from 'node:worker_threads'

// Worker entry of describeTreeInParallel (describe-tree.ts): describes a batch of a tree's entries, in the
// format of describeTree (agent/demo/tree-gen.ts). Synchronous calls on purpose: fs/promises costs a thread-pool
// round trip and a promise per call, which made describeTree ~7 × slower on 200,000 small files.

/** One batch: entry paths relative to `root`. */
export interface DescribeRequest { root: string, paths: string[] }
/** The batch's descriptions, in the order of its paths; or why the batch failed. */
export type DescribeResponse = { descriptions: string[] } | { error: string }

if (parentPort === null) throw new Error('scripts/bench/describe-worker must run in a worker thread')
const port = parentPort

/** Reused across files: 200,000 small files would otherwise mean 200,000 buffers for the GC. */
const buffer = Buffer.allocUnsafe(1024 * 1024)

/** SHA-256 of whatever the file holds up to its end, read in pieces (no size limit, no buffer per file). */
function sha256OfFile (path: string): string {
  const hash = createHash('sha256')
  const fd = openSync(path, 'r')
  try {
    for (;;) {
      const n = readSync(fd, buffer, 0, buffer.length, null)
      if (n === 0) break
      hash.update(buffer.subarray(0, n))
    }
  } finally {
    closeSync(fd)
  }
  return hash.digest('hex')
}

/** Exactly describeTree's string for one entry: symlinks are not followed, anything else not a directory is read. */
function describeEntry (root: string, rel: string): string {
  const abs = join(root, rel)
  const st = lstatSync(abs)
  const mode = (st.mode & 0o7777).toString(8)
  if (st.isSymbolicLink()) return `link -> ${readlinkSync(abs)}`
  if (st.isDirectory()) return `dir ${mode}`
  return `file ${mode} ${st.size} ${sha256OfFile(abs)}`
}

port.on('message', (request: DescribeRequest) => {
  let reply: DescribeResponse
  try {
    reply = { descriptions: request.paths.map(p => describeEntry(request.root, p)) }
  } catch (err) {
    reply = { error: err instanceof Error ? err.message : String(err) }
  }
  port.postMessage(reply)
})
