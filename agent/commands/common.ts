import { availableParallelism } from 'node:os'
import { InvalidArgumentError, Option } from 'commander'
import { resolveHome, type HomeLayout } from '../core/home.js'
import { loadConfig, type AgentConfig } from '../core/config.js'
import type { Store } from '../store/index.js'
import type { ChunkerPool } from '../chunk/pool.js'
import { createLogger, type Logger } from '../core/log.js'
import { connectAgent } from '../control/client.js'
import type { AgentApi } from '../api/api.js'

/** Runs fn against the agent running on this home; undefined (fn not called) when no agent runs. */
export async function viaAgent<T> (homeArg: string | undefined, fn: (api: AgentApi) => Promise<T>): Promise<T | undefined> {
  const api = await connectAgent(resolveHome(homeArg))
  return api === undefined ? undefined : await fn(api)
}

export const homeOption = (): Option => new Option('--home <dir>', 'agent home directory (default: $DELTAMESH_HOME)')

export interface LocalContext {
  home: HomeLayout
  config: AgentConfig
  store: Store
  pool: ChunkerPool
  log: Logger
}

/** Opens what a local (agent-less) command needs and closes it afterwards, whatever happens. */
export async function withLocalContext<T> (homeArg: string | undefined, fn: (ctx: LocalContext) => Promise<T>): Promise<T> {
  const home = resolveHome(homeArg)
  const config = await loadConfig(home.config)
  const log = createLogger()
  // loaded here, not at the top: commands that do not touch the store start faster
  const { openStore } = await import('../store/index.js')
  const { ChunkerPool } = await import('../chunk/pool.js')
  const store = await openStore(home.db)
  const pool = new ChunkerPool({ size: availableParallelism() })
  try {
    return await fn({ home, config, store, pool, log })
  } finally {
    await pool.close()
    await store.close()
    log.flush()
  }
}

export { formatBytes } from '../core/format.js'

/** An error whose process exit code is not 1 (e.g. 2 for "verification found problems"). */
export class ExitError extends Error {
  constructor (message: string, readonly exitCode: number) {
    super(message)
    this.name = 'Error'
  }
}

/** A version number given on the command line: decimal digits only (no 1e3, no 0x10), 1 or more. */
export function parseSeq (v: string): number {
  const n = Number(v)
  if (!/^\d{1,15}$/.test(v) || n < 1) throw new InvalidArgumentError('expected a version number (1, 2, …)')
  return n
}
