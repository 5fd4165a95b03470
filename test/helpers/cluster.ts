import { afterEach } from 'vitest'
import { Cluster } from '../../agent/demo/local-cluster.js'

// The end-to-end tests' cluster: one per test, removed after it; when the test failed, each agent's log tail
// goes to stderr first (that is where the reason is). The chunks of a tree come from the benchmarks' helper.

export { chunkSet } from '../../scripts/bench/chunk-set.js'

/** Characters of each agent's log shown for a failed test. */
const LOG_TAIL = 8000

export interface ClusterPerTest {
  /** The test's cluster (Cluster.create); removed after the test. */
  create: (prefix?: string) => Promise<Cluster>
}

/**
 * Registers the afterEach: log tails on failure, then `teardown` (what the file started besides agents:
 * rogue peers, samplers, mounts), then the cluster's cleanup. Call once at the top of a test file.
 */
export function clusterPerTest (options: { teardown?: (cluster: Cluster | undefined) => Promise<void> } = {}): ClusterPerTest {
  let cluster: Cluster | undefined
  afterEach(async (context) => {
    if (context.task.result?.state === 'fail') for (const s of cluster?.sites ?? []) process.stderr.write(`--- ${s.name} log ---\n${s.log.slice(-LOG_TAIL)}\n`)
    await options.teardown?.(cluster)
    await cluster?.cleanup()
    cluster = undefined
  })
  return {
    create: async (prefix) => {
      cluster = await Cluster.create(prefix)
      return cluster
    },
  }
}
