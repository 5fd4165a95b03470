import { parentPort } from 'node:worker_threads'
import { serializeError } from '../workers.js'
import { runFsOp, type FsOp, type FsOpResult } from './fs-batch-ops.js'

// Worker entry of FsBatch: runs each batch's steps in order, synchronously, and answers with their results.

export interface FsBatchRequest { id: number, ops: FsOp[] }
export interface FsBatchResponse { id: number, results: FsOpResult[] }

if (parentPort === null) throw new Error('agent/versions/fs-batch-worker must run in a worker thread')
const port = parentPort

port.on('message', (msg: FsBatchRequest) => {
  const reply: FsBatchResponse = { id: msg.id, results: msg.ops.map(op => runFsOp(op, serializeError)) }
  port.postMessage(reply)
})
