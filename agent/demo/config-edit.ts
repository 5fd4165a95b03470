import { readFile, writeFile } from 'node:fs/promises'
import { parse as parseToml, stringify as stringifyToml, type TomlTable } from 'smol-toml'
import { parseConfig, type ConfigFile } from '../core/config.js'

// The one editor of config.toml for the demo cluster, the end-to-end tests and the benchmarks: the file is
// parsed as TOML, the patch merged in, the result validated as the agent would, and written back. The
// operator's comments do not survive (clusters here are throwaway); `deltamesh peers add` and `trust` keep them.

type Patch<T> = T extends readonly unknown[] ? T : T extends object ? { [K in keyof T]?: Patch<T[K]> } : T
/** Tables are merged key by key; scalars and arrays (also arrays of tables such as [[links]]) are replaced. */
export type ConfigPatch = Patch<ConfigFile>

function isTable (value: unknown): value is TomlTable {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date)
}

function merge (into: TomlTable, patch: object): void {
  for (const [key, value] of Object.entries(patch) as Array<[string, unknown]>) {
    if (value === undefined) continue
    const current = into[key]
    if (isTable(value) && isTable(current)) merge(current, value)
    else into[key] = structuredClone(value) as TomlTable[string]
  }
}

/** Applies `patch` to the config file; throws a ConfigError (and writes nothing) when the result is not a valid config. */
export async function editConfig (file: string, patch: ConfigPatch): Promise<void> {
  const config: TomlTable = parseToml(await readFile(file, 'utf8'))
  merge(config, patch)
  const text = stringifyToml(config)
  parseConfig(text, file)
  await writeFile(file, text)
}
