// The scan cache's namespace per chunking (the presets themselves are protocol/chunking.ts).
import type { ChunkingParams } from '../../protocol/manifest.js'
import { DEFAULT_CHUNKING } from '../../protocol/chunking.js'

/**
 * Scan-cache namespace of a source chunked with `params`: a cached chunk list is only valid for the
 * parameters that cut it, so a tree whose setting changed re-reads its files once. The default keeps the
 * plain source path (caches written before this setting existed stay valid).
 */
export function scanCacheKey (source: string, params: ChunkingParams): string {
  const d = DEFAULT_CHUNKING
  if (params.algorithm === d.algorithm && params.avgBits === d.avgBits && params.minSize === d.minSize && params.maxSize === d.maxSize) return source
  return `${source}\u0001${params.algorithm}/${params.avgBits}/${params.minSize}/${params.maxSize}`
}
