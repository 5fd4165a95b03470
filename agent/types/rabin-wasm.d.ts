// rabin-wasm 0.1.5 is CommonJS without typings for its JS API (only the AssemblyScript module's .d.ts).
declare module 'rabin-wasm' {
  /** The instantiated AssemblyScript module (from @assemblyscript/loader); opaque except for what we use. */
  export interface RabinWasmModule {
    readonly memory: WebAssembly.Memory
    __release (ptr: number): void
  }

  /** The AssemblyScript-side chunker object; valueOf() is its pointer in wasm memory. */
  export interface RabinWasmObject {
    valueOf (): number
  }

  export class Rabin {
    /** bits is log2 of the target size beyond min (not bytes); polynomial is ignored by the wasm. */
    constructor (asModule: RabinWasmModule, bits?: number, min?: number, max?: number, windowSize?: number, polynomial?: number)
    readonly rabin: RabinWasmObject
    /** Stateful: lengths of the chunks completed so far; the trailing partial chunk is never returned. */
    fingerprint (buf: Uint8Array): Int32Array
  }

  /** Instantiates a fresh wasm module (~0.7 ms) and a chunker on it. */
  export function create (bits: number, min: number, max: number, windowSize?: number, polynomial?: number): Promise<Rabin>
}
