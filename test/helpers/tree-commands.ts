import { join } from 'node:path'
import { cliOk, type Cluster, type Site } from '../../agent/demo/local-cluster.js'

/** The CLI steps the end-to-end tests repeat, for one tree: subscribe, publish, wait for a version. */
export function treeCommands (tree: string): {
  subscribe: (c: Cluster, site: Site) => Promise<string>
  publish: (site: Site, source: string, label?: string) => Promise<number>
  syncDone: (site: Site, seq: number, timeoutS?: number) => Promise<void>
} {
  return {
    /** Subscribes `site` at DIR/<site>-mirror; returns that path. */
    subscribe: async (c, site) => {
      const to = join(c.dir, `${site.name}-mirror`)
      await cliOk(['subscribe', '--home', site.home, tree, '--to', to])
      return to
    },
    publish: async (site, source, label = '') =>
      (JSON.parse(await cliOk(['publish', '--home', site.home, tree, source, '--label', label, '--json'])) as { seq: number }).seq,
    /** `deltamesh sync --seq`: resolves once the site holds at least `seq`. */
    syncDone: async (site, seq, timeoutS = 120) => {
      await cliOk(['sync', '--home', site.home, tree, '--seq', String(seq), '--timeout', String(timeoutS)], { timeoutMs: (timeoutS + 10) * 1000 })
    },
  }
}
