// Chunking parameter sets: the default and the presets a tree can be published with (config `[chunking]`).
// Pure values: the manifest header records the parameters and subscribers never re-chunk, so a tree's
// setting concerns its publisher alone.
// Measured (scripts/bench/chunk-sizes.ts, docs/design-notes.md "Chunk size: per tree"): finer chunks send
// ~5 % fewer bytes on images whose contents shift (ISOs) and nothing less on package trees or small files,
// for 3 × the chunks (manifest, index entries, per-chunk CPU on every site). So the default stays, and an
// image tree can ask for 16 KiB.
import type { ChunkingParams } from './manifest.js'

/**
 * Default chunking of new trees, chosen by measurement (2-core VM, Node 20; scripts/bench-chunking.ts and a
 * 64 MiB sweep over random data and over /usr/lib binaries):
 *
 * Algorithm: gear. Cutting alone runs at 500-900 MB/s for gear and 55-90 MB/s for rabin-wasm (which also copies
 * every buffer into wasm memory), so rabin makes chunk+SHA-256 reach only 7-10 % of the SHA-256-only ceiling in
 * one thread and cannot get near it with two; gear gets ~30 % in one thread and ≥ 50 % through the pool.
 * Boundary stability is the same: 100 bytes inserted near the start of 64 MiB change 1 chunk of ~1300 with
 * either algorithm, on random and on real data (test/unit/chunker.test.ts asserts ≤ 3). Gear's normalized
 * chunking also gives a much tighter size distribution (median ≈ mean) and almost never hits maxSize.
 *
 * Sizes: the design asks for a 64 KiB average with min 16 KiB and max 256 KiB, but both algorithms average
 * about minSize + 2^avgBits, so with min 16 KiB no power of two lands on 64 KiB. Measured averages (random / real):
 *   gear  bits 15 min 16 KiB: 50.8 / 55.3 KiB (median 51.7 / 52.6)   <- chosen
 *   gear  bits 16 min 16 KiB: 85.7 / 93.0 KiB
 *   gear  bits 15 min 32 KiB: 67.0 / 71.7 KiB (closest to 64 KiB, but min = avg/2 instead of FastCDC's avg/4)
 *   rabin bits 15 min 16 KiB: 47.3 / 38.7 KiB (median 37.9 / 25.4: low-entropy data cuts early and often)
 *   rabin bits 16 min 16 KiB: 79.4 / 51.8 KiB
 * We keep the designed min and max and take the smaller average: finer deduplication for 36 bytes of manifest
 * per ~52 KiB (0.07 %). maxSize was reached by 2 chunks of 1186 on real data (long zero runs only).
 */
export const DEFAULT_CHUNKING: ChunkingParams = Object.freeze({
  algorithm: 'gear',
  avgBits: 15,
  minSize: 16 * 1024,
  maxSize: 256 * 1024,
})

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

