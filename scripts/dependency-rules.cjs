// The layering of agent/ and protocol/, checked by `npm test` (dependency-cruiser): each folder may import
// only from folders below it in LAYERS, and nothing may form a cycle. README "Layout" says what each owns.
// A new folder must be placed here; an import that points upward fails the suite with the rule's name.
const LAYERS = [
  'protocol', //   wire and data formats: pure, no I/O
  'core', //       configuration and its values, logging, the home layout, identity, worker threads
  'fs', //         filesystem primitives: never through a symlink, batched in a worker, durability, mirror modes
  'store', //      LevelDB: catalog, chunk index, manifests read back from the catalog
  'chunk', //      content-defined chunking, hashing, the chunker pool, entropy estimate
  'scan', //       walking a source tree into manifest entries
  'delta', //      deltas between versions: signatures, compute, prune
  'versions', //   materializing, installing, retention, filters, verify
  'publish', //    a new version from a source directory
  'net', //        libp2p node and protocols, admission of announcements
  'bandwidth', //  limits, schedules, fair shaping, rate meters
  'sync', //       pulling a version: swarm scheduler, chunk pump, paced fetch, version sync
  'api', //        the agent's API types (control socket, dashboard, metrics)
  'netview', //    site status gossip, network view, traffic
  'metrics', //    Prometheus metrics
  'dashboard', //  the dashboard's HTTP listener and snapshot
  'mirrors', //    the public metalink and mirrorlist listener
  'control', //    the local control socket: server and client
  'daemon', //     the agent: wiring, trees, operations
  'demo', //       local clusters and the demo
  'commands', //   the CLI's commands
  'root', //       agent/cli.ts and agent/polyfill.ts (entry points)
]

const folderPattern = layer => layer === 'protocol' ? '^protocol/' : layer === 'root' ? '^agent/[^/]+\\.ts$' : `^agent/${layer}/`

const upward = LAYERS.slice(0, -1).map((layer, i) => ({
  name: `layer-${layer}`,
  comment: `${layer} may import only from the layers below it: ${LAYERS.slice(0, i).join(', ') || 'none'}`,
  severity: 'error',
  from: { path: folderPattern(layer) },
  to: { path: LAYERS.slice(i + 1).map(folderPattern).join('|') },
}))

module.exports = {
  forbidden: [
    { name: 'no-circular', comment: 'no import cycles, value or type', severity: 'error', from: { path: '^(agent|protocol)/' }, to: { circular: true } },
    {
      name: 'unplaced-folder',
      comment: 'every folder of agent/ has a place in LAYERS (scripts/dependency-rules.cjs)',
      severity: 'error',
      from: { path: '^agent/', pathNot: LAYERS.map(folderPattern).join('|') },
      to: {},
    },
    { name: 'protocol-has-no-io', comment: 'protocol/ is pure: no filesystem, network or processes', severity: 'error', from: { path: '^protocol/' }, to: { dependencyTypes: ['core'], path: '^(fs|fs/promises|net|child_process|worker_threads|http|https|dgram|os)$' } },
    { name: 'product-not-test', comment: 'agent/ and protocol/ never import tests, scripts or dev tooling', severity: 'error', from: { path: '^(agent|protocol)/' }, to: { path: '^(test|scripts)/' } },
    ...upward,
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|node_modules)/' },
    parser: 'swc',
    tsPreCompilationDeps: true,
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
}
