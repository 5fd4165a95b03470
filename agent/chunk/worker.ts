import { parentPort } from 'node:worker_threads'
import { chunkFile } from './chunker.js'
import { packChunks, serializeError, type WorkerRequest, type WorkerResponse } from './worker-protocol.js'

// Worker entry of ChunkerPool: chunks and hashes files on request. Several jobs may be in flight (the pool
// sends one at a time, but an aborted job can still be draining when the next arrives).

if (parentPort === null) throw new Error('agent/chunk/worker must run in a worker thread')
const port = parentPort
const running = new Map<number, AbortController>()

port.on('message', (msg: WorkerRequest) => {
  if (msg.type === 'abort') { running.get(msg.id)?.abort(); return }
  const controller = new AbortController()
  running.set(msg.id, controller)
  chunkFile(msg.path, msg.params, { signal: controller.signal, start: msg.start, end: msg.end })
    .then(chunks => {
      const { sizes, ids } = packChunks(chunks)
      const reply: WorkerResponse = { type: 'done', id: msg.id, start: msg.start ?? 0, sizes, ids }
      port.postMessage(reply, [sizes.buffer, ids.buffer])
    }, (err: unknown) => {
      const reply: WorkerResponse = { type: 'failed', id: msg.id, error: serializeError(err) }
      port.postMessage(reply)
    })
    // If postMessage itself throws, the rejection kills the worker: the pool fails the job and replaces it.
    .finally(() => running.delete(msg.id))
})
