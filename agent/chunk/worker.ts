import { parentPort } from 'node:worker_threads'
import { chunkFile } from './chunker.js'
import { verifyFileChunks } from './verify.js'
import { serializeError } from '../core/workers.js'
import { packChunks, unpackChunks, type JobRequest, type WorkerRequest, type WorkerResponse } from './worker-protocol.js'

// Worker entry of ChunkerPool: chunks and hashes files, or checks one against a chunk list it should still
// have, on request. Several jobs may be in flight (the pool sends up to jobsPerWorker, and an aborted job can
// still be draining when the next arrives).

if (parentPort === null) throw new Error('agent/chunk/worker must run in a worker thread')
const port = parentPort
const running = new Map<number, AbortController>()

port.on('message', (msg: WorkerRequest) => {
  if (msg.type === 'abort') { running.get(msg.id)?.abort(); return }
  const controller = new AbortController()
  running.set(msg.id, controller)
  run(msg, controller.signal)
    .then(([reply, transfer]) => port.postMessage(reply, transfer), (err: unknown) => {
      const reply: WorkerResponse = { type: 'failed', id: msg.id, error: serializeError(err) }
      port.postMessage(reply)
    })
    // If postMessage itself throws, the rejection kills the worker: the pool fails the job and replaces it.
    .finally(() => running.delete(msg.id))
})

async function run (msg: JobRequest, signal: AbortSignal): Promise<[WorkerResponse, ArrayBuffer[]]> {
  if (msg.type === 'verify') {
    const chunks = unpackChunks(msg.start, msg.sizes, msg.ids)
    const match = await verifyFileChunks(msg.path, chunks, { signal, start: msg.start, checkEnd: msg.checkEnd })
    return [{ type: 'verified', id: msg.id, match }, []]
  }
  const chunks = await chunkFile(msg.path, msg.params, { signal, start: msg.start, end: msg.end, sparse: msg.sparse })
  const { sizes, ids } = packChunks(chunks)
  return [{ type: 'done', id: msg.id, start: msg.start ?? 0, sizes, ids }, [sizes.buffer, ids.buffer]]
}
