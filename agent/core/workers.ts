import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'

// What every worker thread of the agent needs: starting its entry module from the compiled .js or, under
// vitest, from the .ts source; and errors that cross the thread boundary with their errno code intact.

/**
 * Young generation of a worker's V8 heap, MiB. The workers hash, read and write: their bytes live in
 * ArrayBuffers outside the heap and their objects die young, yet each grew the default young generation
 * (3 × 16 MiB semi-spaces) after a few thousand files. Measured, a publish of 50,000 small files with 2
 * chunker workers: peak RSS 265–277 MiB with the default, 224–239 with 4 MiB, process CPU unchanged
 * (15.3–16.1 s either way).
 */
const WORKER_YOUNG_GENERATION_MB = 4

/**
 * Starts the worker whose entry is `name` (without extension) next to `importMetaUrl`'s module.
 * Under vitest or tsx the caller is the .ts source. `execArgv: ['--import', 'tsx']` does NOT work on Node 20:
 * ESM hooks registered in a worker apply only after its entry module was loaded ("Unknown file extension
 * .ts"). tsx's CommonJS require hook is synchronous and per thread, and compiles the worker (and the modules
 * it imports, import.meta.url included) to CJS on the fly.
 */
export function startModuleWorker (importMetaUrl: string, name: string): Worker {
  const options = { resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_GENERATION_MB } }
  if (!importMetaUrl.endsWith('.ts')) return new Worker(new URL(`./${name}.js`, importMetaUrl), options)
  const require = createRequire(importMetaUrl)
  const hook = require.resolve('tsx/cjs')
  const entry = fileURLToPath(new URL(`./${name}.ts`, importMetaUrl))
  return new Worker(`require(${JSON.stringify(hook)}); require(${JSON.stringify(entry)})`, { ...options, eval: true })
}

/** An error as it crosses the thread boundary: enough to rebuild `name`, `code` (ENOENT…) and the message. */
export interface SerializedError {
  name: string
  message: string
  code?: string
  errno?: number
  syscall?: string
  path?: string
}

export function serializeError (err: unknown): SerializedError {
  if (!(err instanceof Error)) return { name: 'Error', message: String(err) }
  const e = err as NodeJS.ErrnoException
  return { name: e.name, message: e.message, code: e.code, errno: e.errno, syscall: e.syscall, path: e.path }
}

export function deserializeError (s: SerializedError): Error {
  const err = new Error(s.message) as NodeJS.ErrnoException
  err.name = s.name
  if (s.code !== undefined) err.code = s.code
  if (s.errno !== undefined) err.errno = s.errno
  if (s.syscall !== undefined) err.syscall = s.syscall
  if (s.path !== undefined) err.path = s.path
  return err
}
