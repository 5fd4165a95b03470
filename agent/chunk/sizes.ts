// Chunk-size presets a tree can be published with (config `[chunking]`). The manifest header records the
// parameters and subscribers never re-chunk, so a tree's setting concerns its publisher alone.
// Measured (scripts/bench/chunk-sizes.ts, docs/design-notes.md "Chunk size: per tree"): finer chunks send
// ~5 % fewer bytes on images whose contents shift (ISOs) and nothing less on package trees or small files,
// for 3 × the chunks (manifest, index entries, per-chunk CPU on every site). So the default stays, and an
// image tree can ask for 16 KiB.
import type { ChunkingParams } from '../../protocol/manifest.js'
import { DEFAULT_CHUNKING } from './chunker.js'

/** FastCDC proportions: the cut-free minimum is about half the average; the names are the measured averages. */
export const CHUNK_SIZES = {
  '16KiB': Object.freeze({ algorithm: 'gear', avgBits: 13, minSize: 8 * 1024, maxSize: 256 * 1024 }),
  '32KiB': Object.freeze({ algorithm: 'gear', avgBits: 14, minSize: 16 * 1024, maxSize: 256 * 1024 }),
  '52KiB': DEFAULT_CHUNKING,
  '64KiB': Object.freeze({ algorithm: 'gear', avgBits: 15, minSize: 32 * 1024, maxSize: 256 * 1024 }),
} as const satisfies Record<string, ChunkingParams>

export type ChunkSizeName = keyof typeof CHUNK_SIZES
export const CHUNK_SIZE_NAMES = Object.keys(CHUNK_SIZES) as [ChunkSizeName, ...ChunkSizeName[]]

/** The chunking a tree is published with: its own setting, else the agent's, else the default. */
export function chunkingFor (config: { average?: ChunkSizeName, trees?: Record<string, ChunkSizeName> } | undefined, tree: string): ChunkingParams {
  return CHUNK_SIZES[config?.trees?.[tree] ?? config?.average ?? '52KiB']
}

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
