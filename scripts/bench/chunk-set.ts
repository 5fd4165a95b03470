// The distinct chunks of a tree as `deltamesh manifest --entries` lists them: the agent's own scanner and
// chunker, run by the compiled CLI, independent of any running agent. For the benchmarks and the end-to-end tests.
import { join } from 'node:path'
import { cliOk } from '../../agent/demo/local-cluster.js'

interface ListedEntry { path: string, chunks?: Array<[string, number]> }

/** `manifest --entries` of root: one JSON line per entry, file entries with their [hex id, size] chunks. */
async function* listedEntries (root: string, options: { chunkSize?: string, timeoutMs?: number }): AsyncGenerator<ListedEntry> {
  const sizeArgs = options.chunkSize === undefined ? [] : ['--chunk-size', options.chunkSize]
  const out = await cliOk(['manifest', '--entries', ...sizeArgs, root], { timeoutMs: options.timeoutMs })
  for (const line of out.split('\n')) if (line !== '') yield JSON.parse(line) as ListedEntry
}

/** Unique chunks of the tree at root: hex id → size. `timeoutMs` for the CLI run (large trees take minutes). */
export async function chunkSet (root: string, timeoutMs?: number): Promise<Map<string, number>> {
  const set = new Map<string, number>()
  for await (const entry of listedEntries(root, { timeoutMs })) for (const [id, size] of entry.chunks ?? []) set.set(id, size)
  return set
}

/** Where each distinct chunk of the tree at root lies (the first file and offset that hold it), by hex id, cut at `chunkSize`. */
export async function chunkPlaces (root: string, chunkSize = '52KiB', timeoutMs?: number): Promise<Map<string, { size: number, path: string, offset: number }>> {
  const places = new Map<string, { size: number, path: string, offset: number }>()
  for await (const entry of listedEntries(root, { chunkSize, timeoutMs })) {
    let offset = 0
    for (const [id, size] of entry.chunks ?? []) {
      if (!places.has(id)) places.set(id, { size, path: join(root, entry.path), offset })
      offset += size
    }
  }
  return places
}
