import { parentPort } from 'node:worker_threads'
import { serializeError } from '../core/workers.js'
import { ReadFiles, type FsOp, type FsOpResult, type FsOutcomes } from './fs-batch-ops.js'
import { runFsOps } from './read-runs.js'

// Worker entry of FsBatch: runs each batch's steps in order, synchronously, and answers with their results.

export interface FsBatchRequest { id: number, ops: FsOp[] }
export interface FsBatchResponse { id: number, results: FsOpResult[] }

if (parentPort === null) throw new Error('agent/versions/fs-batch-worker must run in a worker thread')
const port = parentPort

port.on('message', (msg: FsBatchRequest) => {
  const files = new ReadFiles()
  let results: FsOpResult[]
  try {
    results = runFsOps(msg.ops, serializeError, files)
  } finally {
    files.closeAll()
  }
  // the bytes read go over by transfer, not by copy (the chunks of a run share one buffer)
  const transfer = new Set<ArrayBuffer>()
  results.forEach((r, i) => {
    if (msg.ops[i]?.type !== 'read' || !r.ok) return
    const outcome = r.value as FsOutcomes['read']
    if (outcome.kind === 'ok') transfer.add(outcome.bytes.buffer as ArrayBuffer)
  })
  const reply: FsBatchResponse = { id: msg.id, results }
  port.postMessage(reply, [...transfer])
})
