// Removing what a round leaves behind. The small corpus leaves 12 trees of 200,000 files a round (6 rsync
// destinations, casync's output, 5 mirrors): Node's fs.rm({ recursive }) took ~10 s a tree on this VM,
// `rm -rf` ~4 s.
import type { Cluster } from '../../agent/demo/local-cluster.js'
import { runOk } from './proc.js'

export async function removeTree (dir: string): Promise<void> {
  await runOk('rm', ['-rf', '--', dir])
}

/** Stops a cluster's agents; unless `keep`, removes its directory (homes and mirrors) with removeTree. */
export async function removeCluster (cluster: Cluster, keep: boolean): Promise<void> {
  if (keep) { await cluster.cleanup({ keepFiles: true }); return }
  // what cleanup() does without keepFiles, with the faster removal
  await Promise.all(cluster.sites.map(async s => { await cluster.stop(s, 'SIGKILL') }))
  await removeTree(cluster.dir)
  await cluster.cleanup()
}
