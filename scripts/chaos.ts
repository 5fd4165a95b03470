// Chaos run: a publisher and several subscribing agents (real processes on 127.0.0.1) plus a lying peer, while
// versions are published and agents are SIGKILLed and restarted and links between them are cut. Every link
// between two agents runs through a TCP relay owned by this script, so a "link drop" is a real connection reset
// seen by both sides. The run is bounded in events and in time, then heals (restarts the dead, stops the chaos)
// and gives a verdict: every subscriber converged to the newest version, byte-identical to the source, every
// file re-hashed against the signed manifest (`verify`), and no corrupt chunk accepted.
//
// Run: npm run build && npm run chaos -- [--agents 4] [--versions 4] [--seconds 180] [--events 60] [--seed 7] [--keep]
import '../agent/polyfill.js'
import { createServer, connect, type Server, type Socket } from 'node:net'
import { cp } from 'node:fs/promises'
import { join } from 'node:path'
import { Cluster, cliOk, runCli, sleep, type Site } from '../agent/demo/local-cluster.js'
import { RoguePeer } from '../test/helpers/rogue-peer.js'
import { appendPeer, appendTrust } from '../agent/core/config.js'
import { describeTree, generateTree, mutateTree, prng } from '../agent/demo/tree-gen.js'

const TREE = 'chaos/compose/BaseOS'

interface Options { agents: number, versions: number, seconds: number, events: number, seed: string, keep: boolean }

function parseArgs (argv: string[]): Options {
  const o: Options = { agents: 4, versions: 4, seconds: 180, events: 60, seed: '7', keep: false }
  for (let i = 0; i < argv.length; i++) {
    const value = (): string => { const v = argv[++i]; if (v === undefined) throw new Error(`${argv[i - 1]} needs a value`); return v }
    const int = (min: number, max: number): number => { const n = Number(value()); if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${argv[i - 1]} must be an integer in [${min}, ${max}]`); return n }
    switch (argv[i]) {
      case '--agents': o.agents = int(3, 5); break
      case '--versions': o.versions = int(2, 20); break
      case '--seconds': o.seconds = int(30, 3600); break
      case '--events': o.events = int(0, 10_000); break
      case '--seed': o.seed = value(); break
      case '--keep': o.keep = true; break
      case '--help':
        console.log('options: --agents N (3..5, publisher included) --versions N --seconds MAX_WALL_TIME --events MAX_CHAOS_EVENTS --seed S --keep')
        process.exit(0)
        break
      default: throw new Error(`unknown option ${argv[i]}`)
    }
  }
  return o
}

/** A TCP relay from a local port to an agent's port: every connection through it can be cut at will. */
class Relay {
  private constructor (private readonly server: Server, readonly port: number, private readonly sockets: Set<Socket>) {}

  static async open (targetPort: number): Promise<Relay> {
    const sockets = new Set<Socket>()
    const server = createServer(client => {
      const upstream = connect(targetPort, '127.0.0.1')
      for (const s of [client, upstream]) { sockets.add(s); s.on('close', () => sockets.delete(s)); s.on('error', () => {}) }
      client.pipe(upstream)
      upstream.pipe(client)
      client.on('close', () => upstream.destroy())
      upstream.on('close', () => client.destroy())
    })
    await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(0, '127.0.0.1', resolve) })
    const address = server.address()
    return new Relay(server, typeof address === 'object' && address !== null ? address.port : 0, sockets)
  }

  /** Connections through the relay right now. */
  get live (): number { return Math.ceil(this.sockets.size / 2) }

  /** Resets every connection through the relay; returns how many were cut. */
  drop (): number {
    const n = this.sockets.size
    for (const s of this.sockets) s.resetAndDestroy()
    return Math.ceil(n / 2)
  }

  async close (): Promise<void> {
    this.drop()
    await new Promise<void>(resolve => this.server.close(() => resolve()))
  }
}

interface Figures {
  published: number
  kills: number
  restarts: number
  linkDrops: number
  connectionsCut: number
  liesTold: number
  badChunksRejected: number
  liarBannedBy: number
  bytesVerified: number
  filesVerified: number
  convergeMs: number
}

async function main (): Promise<number> {
  const o = parseArgs(process.argv.slice(2))
  const started = Date.now()
  const deadline = started + o.seconds * 1000
  const random = prng(`chaos-${o.seed}`)
  const pick = <T>(items: T[]): T => items[Math.floor(random() * items.length)] as T
  const f: Figures = { published: 0, kills: 0, restarts: 0, linkDrops: 0, connectionsCut: 0, liesTold: 0, badChunksRejected: 0, liarBannedBy: 0, bytesVerified: 0, filesVerified: 0, convergeMs: 0 }
  const cluster = await Cluster.create('deltamesh-chaos-')
  const relays: Relay[] = []
  let rogue: RoguePeer | undefined
  const log = (line: string): void => { console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(6)} s] ${line}`) }
  // Ctrl-C: the agents, the liar and the relays go, and the temp dir with them, whatever phase we are in
  const abort = (): void => {
    log('interrupted: stopping everything')
    void Promise.allSettled([rogue?.stop(), ...relays.map(async r => await r.close())])
      .then(async () => await cluster.cleanup())
      .finally(() => process.exit(130))
  }
  process.once('SIGINT', abort)
  process.once('SIGTERM', abort)
  try {
    const source = join(cluster.dir, 'source')
    await generateTree(source, { seed: `chaos-${o.seed}`, files: 200, largeBytes: 8 * 1024 * 1024, largeFiles: 2, smallMax: 96 * 1024 })
    const origin = await cluster.addSite('origin')
    const labs: Site[] = []
    for (let i = 1; i < o.agents; i++) labs.push(await cluster.addSite(`lab${i}`))
    // every site reaches every other through its own relay (a cut link is cut for that pair only)
    const relayTo = new Map<string, Relay>()
    for (const a of cluster.sites) {
      for (const b of cluster.sites) {
        if (a === b) continue
        const relay = await Relay.open(b.port)
        relays.push(relay)
        relayTo.set(`${a.name}>${b.name}`, relay)
        // written in-process (validated like `deltamesh peers add`): 20 CLI processes would cost a minute here
        await appendPeer(join(a.home, 'config.toml'), `/ip4/127.0.0.1/tcp/${relay.port}/p2p/${b.peerId}`, b.name)
      }
      await appendTrust(join(a.home, 'config.toml'), TREE, origin.publisherKey)
    }
    // the origin serves at 8 MB/s so that syncs last long enough to be interrupted
    await cluster.editConfig(origin, { limits: { up: '8MB/s' } })
    // agents announce an address nobody listens on, so that the relayed addresses above are the only way to
    // reach them (libp2p would otherwise learn the direct ones through identify and bypass the relays)
    for (const s of cluster.sites) await cluster.editConfig(s, { agent: { announce: ['/ip4/127.0.0.1/tcp/1'] } })
    for (const s of cluster.sites) await cluster.start(s)
    rogue = await RoguePeer.start([TREE])
    for (const s of cluster.sites) {
      rogue.allow(s.peerId)
      await cluster.api(s).addPeer(rogue.multiaddr, 'liar')
    }
    const mirrors = new Map<string, string>()
    for (const lab of labs) {
      const to = join(cluster.dir, `${lab.name}-mirror`)
      await cliOk(['subscribe', '--home', lab.home, TREE, '--to', to])
      mirrors.set(lab.name, to)
    }
    log(`${cluster.sites.length} agents (${labs.length} subscribers), ${relays.length} relayed links, 1 lying peer; up to ${o.versions} versions, ${o.events} chaos events, ${o.seconds} s`)

    const dead = new Set<Site>()
    /** Counters die with a process: bank the liar-related ones before each kill. */
    const bank = async (s: Site): Promise<void> => {
      const st = await cluster.api(s).status().catch(() => undefined)
      f.badChunksRejected += st?.counters.chunksRejected ?? 0
    }
    let events = 0
    const chaosFor = async (ms: number): Promise<void> => {
      const until = Math.min(Date.now() + ms, deadline - 60_000)
      while (Date.now() < until && events < o.events) {
        await sleep(300 + random() * 900)
        events++
        const roll = random()
        const alive = labs.filter(l => !dead.has(l))
        if (roll < 0.35 && alive.length > 1) {
          // at least one subscriber stays up, so there is always someone to swap chunks with
          const lab = pick(alive)
          await bank(lab)
          await cluster.stop(lab, 'SIGKILL')
          dead.add(lab)
          f.kills++
          log(`SIGKILL ${lab.name}`)
        } else if (roll < 0.65 && dead.size > 0) {
          const lab = pick([...dead])
          await cluster.start(lab)
          dead.delete(lab)
          f.restarts++
          log(`restart ${lab.name}`)
        } else {
          // cut a link that carries a connection right now (cutting an idle one tests nothing)
          const busy = [...relayTo.entries()].filter(([, r]) => r.live > 0)
          if (busy.length === 0) continue
          const [pair] = pick(busy)
          const [a, b] = pair.split('>') as [string, string]
          const cut = (relayTo.get(`${a}>${b}`)?.drop() ?? 0) + (relayTo.get(`${b}>${a}`)?.drop() ?? 0)
          f.linkDrops++
          f.connectionsCut += cut
          log(`drop link ${a}–${b} (${cut} connection${cut === 1 ? '' : 's'} cut; ${relays.reduce((n, r) => n + r.live, 0)} relayed connections live)`)
        }
      }
    }

    let newest = 0
    for (let v = 1; v <= o.versions && Date.now() < deadline - 60_000; v++) {
      if (v > 1) await mutateTree(source, `chaos-${o.seed}-v${v}`, 0.2, 2 * 1024 * 1024)
      newest = (JSON.parse(await cliOk(['publish', '--home', origin.home, TREE, source, '--label', `chaos-v${v}`, '--json'])) as { seq: number }).seq
      f.published++
      log(`published v${v} (seq ${newest})`)
      // the liar claims every version as soon as it hears of it
      void (async () => {
        for (let i = 0; i < 40 && rogue?.envelopes.get(TREE)?.seq !== newest; i++) await sleep(50)
        await rogue?.advertise().catch(() => {})
      })()
      await chaosFor(8_000 + random() * 6_000)
    }
    const lastPublished = Date.now()

    // heal: the dead come back, the chaos stops; everyone must converge
    for (const lab of [...dead]) { await cluster.start(lab); dead.delete(lab); f.restarts++; log(`restart ${lab.name} (heal)`) }
    const left = Math.max(20, Math.floor((deadline - Date.now()) / 1000))
    log(`healed; waiting up to ${left} s for ${labs.length} subscribers to hold seq ${newest}`)
    const synced = await Promise.all(labs.map(async lab => await runCli(['sync', '--home', lab.home, TREE, '--seq', String(newest), '--timeout', String(left)], { timeoutMs: (left + 10) * 1000 })))
    f.convergeMs = Date.now() - lastPublished
    f.liesTold = rogue.chunksServed

    // verdict
    const problems: string[] = []
    const want = await describeTree(source)
    for (const [i, lab] of labs.entries()) {
      const r = synced[i]
      if (r?.code !== 0) problems.push(`${lab.name}: sync did not complete: ${r?.stderr.trim() ?? ''}`)
      const got = await describeTree(mirrors.get(lab.name) as string).catch((err: Error) => ({ error: err.message }))
      const diff = Object.keys({ ...want, ...got }).filter(k => (want as Record<string, string>)[k] !== (got as Record<string, string>)[k])
      if (diff.length > 0) problems.push(`${lab.name}: mirror differs from the source at ${diff.length} path(s), e.g. ${diff.slice(0, 3).join(', ')}`)
      const verify = await runCli(['verify', '--home', lab.home, TREE, '--json'])
      if (verify.code !== 0) problems.push(`${lab.name}: verify exited ${verify.code}: ${verify.stdout.slice(0, 300)}${verify.stderr.slice(0, 300)}`)
      else {
        const summary = JSON.parse(verify.stdout) as { files: number, bytes: number, problems: unknown[] }
        f.filesVerified += summary.files
        f.bytesVerified += summary.bytes
        if (summary.problems.length > 0) problems.push(`${lab.name}: ${summary.problems.length} file(s) do not match the signed manifest`)
      }
      const st = await cluster.status(lab)
      if (st.trees.find(t => t.name === TREE)?.currentSeq !== newest) problems.push(`${lab.name}: current seq is not ${newest}`)
      f.badChunksRejected += st.counters.chunksRejected
      if ((st.peers.find(p => p.peerId === rogue?.peerId)?.bannedUntilMs ?? 0) > Date.now()) f.liarBannedBy++
    }
    if (Date.now() > deadline + 30_000) problems.push(`the run overran its ${o.seconds} s bound`)
    const seconds = (Date.now() - started) / 1000
    console.log('')
    console.log('chaos figures')
    console.log(`  agents                 ${cluster.sites.length} (1 publisher, ${labs.length} subscribers) + 1 lying peer`)
    console.log(`  versions published     ${f.published} (newest seq ${newest})`)
    console.log(`  chaos events           ${events}: ${f.kills} SIGKILLs (each agent restarted after, ${f.restarts} restarts in all), ${f.linkDrops} link drops (${f.connectionsCut} connections cut)`)
    console.log(`  lies                   ${f.liesTold} wrong chunks served by the liar, ${f.badChunksRejected} of them reached a subscriber and were refused by hash (the others were in flight when a subscriber hung up on the liar or was killed); liar banned by ${f.liarBannedBy}/${labs.length} subscribers at the end`)
    console.log(`  converged              ${((f.convergeMs) / 1000).toFixed(1)} s after the last publish (heal included)`)
    console.log(`  verified               ${f.filesVerified} files, ${(f.bytesVerified / 1e6).toFixed(1)} MB re-hashed against the signed manifest`)
    console.log(`  wall time              ${seconds.toFixed(1)} s`)
    console.log('')
    if (problems.length === 0) {
      console.log(`VERDICT: PASS — all ${labs.length} subscribers converged to seq ${newest}, byte-identical to the source; 0 corrupt chunks accepted`)
      return 0
    }
    console.log(`VERDICT: FAIL\n  ${problems.join('\n  ')}`)
    for (const s of cluster.sites) console.log(`--- ${s.name} log (tail) ---\n${s.log.slice(-3000)}`)
    return 1
  } finally {
    await rogue?.stop().catch(() => {})
    for (const r of relays) await r.close().catch(() => {})
    if (o.keep) {
      const kept = join(cluster.dir, '..', `${cluster.dir.split('/').pop() ?? 'chaos'}-kept`)
      await cp(cluster.dir, kept, { recursive: true, verbatimSymlinks: true }).catch(() => {})
      console.log(`kept a copy in ${kept}`)
    }
    await cluster.cleanup()
  }
}

main().then(code => { process.exitCode = code }, (err: unknown) => {
  console.error(`chaos: ${(err as Error).stack ?? String(err)}`)
  process.exitCode = 2
})
