// Limits changed at runtime (`deltamesh limit`) outlive a restart: they are kept in HOME/limits.json, not
// written into config.toml, so the operator's file (and its comments) stays as they wrote it. An override
// of a direction replaces that direction's configured rate and its schedule until `limit --reset`.

import { readFile, rename, writeFile } from 'node:fs/promises'
import { z } from 'zod'
import { ConfigError } from '../core/config.js'
import { parseRate } from '../core/rate.js'

const rate = z.string().refine(r => { try { parseRate(r); return true } catch { return false } }, "a rate such as '10MB/s', '80Mbit/s' or 'unlimited'")
const direction = z.object({ up: rate.optional(), down: rate.optional() }).strict()

const overridesSchema = z.object({
  version: z.literal(1),
  global: direction.optional(),
  links: z.record(z.string(), direction).default({}),
  peers: z.record(z.string(), direction).default({}),
  treeWeights: z.record(z.string(), z.number().positive().max(1000)).default({}),
}).strict()

export type DirectionOverride = z.infer<typeof direction>
export type LimitOverrides = z.infer<typeof overridesSchema>

export function emptyOverrides (): LimitOverrides {
  return { version: 1, links: {}, peers: {}, treeWeights: {} }
}

export async function loadOverrides (file: string): Promise<LimitOverrides> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return emptyOverrides()
    throw err
  }
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch (err) {
    throw new ConfigError(file, '', `not valid JSON (${(err as Error).message}); fix or delete it to return to the limits in config.toml`)
  }
  const result = overridesSchema.safeParse(raw)
  if (!result.success) {
    const issue = result.error.issues[0]
    throw new ConfigError(file, issue?.path.join('.') ?? '', `${issue?.message ?? 'invalid'}; fix or delete it to return to the limits in config.toml`)
  }
  return result.data
}

/** Written to a temporary file and renamed, so a crash leaves the old or the new file, never half of one. */
export async function saveOverrides (file: string, overrides: LimitOverrides): Promise<void> {
  const temp = `${file}.tmp-${process.pid}`
  await writeFile(temp, JSON.stringify(overrides, null, 2) + '\n', { mode: 0o600 })
  await rename(temp, file)
}
