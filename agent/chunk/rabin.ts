import { createRequire } from 'node:module'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { Rabin, type RabinWasmModule } from 'rabin-wasm'
import type { ChunkingParams } from '../../protocol/manifest.js'
import type { Cutter } from './cutter.js'

// rabin-wasm's create() instantiates a new wasm module per call (0.7 ms: 12 minutes for a million small files)
// and is async, while chunkBytes must be synchronous. So we instantiate the module once per thread, the same
// way the package does (its pinned @assemblyscript/loader, its dist/rabin.wasm), and make one chunker object
// per file on it. Each chunker leaves ~80 bytes in wasm memory even after __release (its window buffer is
// not managed), so the module is replaced once its memory has grown past MAX_WASM_MEMORY: instances that
// are still in use keep the old module alive through their own reference.

const WINDOW_SIZE = 64
const MAX_WASM_MEMORY = 64 * 1024 * 1024

interface Loader { instantiateSync (bytes: Uint8Array, imports?: object): RabinWasmModule }

let shared: RabinWasmModule | undefined

function loadModule (): RabinWasmModule {
  const require = createRequire(import.meta.url)
  const entry = require.resolve('rabin-wasm')
  const loader = createRequire(entry)('@assemblyscript/loader') as Loader
  return loader.instantiateSync(readFileSync(join(dirname(entry), '..', 'dist', 'rabin.wasm')))
}

function wasmModule (): RabinWasmModule {
  if (shared === undefined || shared.memory.buffer.byteLength > MAX_WASM_MEMORY) shared = loadModule()
  return shared
}

export class RabinCutter implements Cutter {
  readonly params: ChunkingParams
  private readonly module: RabinWasmModule
  private rabin: Rabin | undefined
  private fed = 0
  private emitted = 0

  constructor (params: ChunkingParams) {
    this.params = params
    this.module = wasmModule()
    this.rabin = new Rabin(this.module, params.avgBits, params.minSize, params.maxSize, WINDOW_SIZE)
  }

  push (bytes: Uint8Array): number[] {
    if (this.rabin === undefined) throw new Error('RabinCutter used after finish()')
    if (bytes.length === 0) return []
    this.fed += bytes.length
    const cuts = Array.from(this.rabin.fingerprint(bytes))
    for (const c of cuts) this.emitted += c
    return cuts
  }

  finish (): number {
    // rabin-wasm never reports the trailing partial chunk: it is whatever was fed and not yet cut.
    const rest = this.fed - this.emitted
    if (this.rabin !== undefined) this.module.__release(this.rabin.rabin.valueOf())
    this.rabin = undefined
    return rest
  }
}
