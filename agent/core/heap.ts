import { setFlagsFromString } from 'node:v8'

// The agent process's V8 heap. An idle agent is mostly its loaded code (old space ~22 MiB) and the young
// generation: starting up (importing libp2p, zod schemas, opening LevelDB) allocates fast enough that V8 grows
// the young generation to its maximum (2 × 16 MiB semi-spaces) within the first second, and gives it back
// only when its memory reducer notices the idle process, 20–60 s later or not at all. Measured
// (scripts/bench-idle.ts, docs/benchmarks.md "Idle agent"): 106–113 MiB RSS at 1 s, of which new space 32 MiB.

/** Whether keepYoungGenerationSmall applied in this process (restoreYoungGenerationGrowth undoes it). */
let held = false

/** Node options with which the user already chose the young generation's size: then it is theirs. */
const USER_CHOICE = /--(max-semi-space-size|semi-space-growth-factor|max-young-generation-size)\b/

/**
 * Keeps the young generation at its initial size (1 MiB semi-spaces) for the rest of the process: V8 reads
 * its growth factor each time it would grow new space, so this applies after start, unlike
 * --max-semi-space-size. The agent's bulk bytes live in Buffers outside the heap, and its objects die young;
 * the worker threads run with a 4 MiB young generation for the same reason (workers.ts). No-op when
 * NODE_OPTIONS or node's own arguments already size it. Returns whether it applied.
 */
export function keepYoungGenerationSmall (execArgv: readonly string[] = process.execArgv, nodeOptions = process.env.NODE_OPTIONS ?? ''): boolean {
  if (execArgv.some(a => USER_CHOICE.test(a)) || USER_CHOICE.test(nodeOptions)) return false
  setFlagsFromString('--semi-space-growth-factor=1')
  held = true
  return true
}

/** V8's default growth factor of new space. */
const DEFAULT_GROWTH_FACTOR = 2

/**
 * Lets the young generation grow again once the agent has started. Start-up is what grew it to 32 MiB and left
 * an idle agent holding it; a busy agent (a sync, a publish) allocates for a reason, and held to 1 MiB
 * semi-spaces it spent 10–25 % more CPU in scavenges (bench:subscriber, docs/benchmarks.md "Idle agent"). So
 * the young generation stays small through start-up and grows with real work: an idle agent keeps the saving,
 * a busy one its speed. No-op when the user sized it (keepYoungGenerationSmall did not apply).
 */
export function restoreYoungGenerationGrowth (): void {
  if (!held) return
  setFlagsFromString(`--semi-space-growth-factor=${DEFAULT_GROWTH_FACTOR}`)
  held = false
}

