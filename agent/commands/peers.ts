// `deltamesh peers`: list (the default: `peers --home DIR` lists), add and remove the sites this agent talks to.
// add and remove tell the running agent, or edit config.toml when it is not running.
import type { Command } from 'commander'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { resolveHome } from '../core/home.js'
import { appendPeer, loadConfig, removePeerEntry } from '../core/config.js'
import { checkPeerAddress, checkRemovable, resolvePeerRef } from '../net/peer-address.js'
import { loadOrCreatePeerKey } from '../net/peer-key.js'
import { homeOption } from './common.js'
import { formatPeers, table } from './format-status.js'
import { viaAgent } from './common.js'

export function registerPeers (program: Command): void {
  const peers = program.command('peers').description('list (the default), add or remove the peers this agent talks to')
  registerList(peers)
  registerAdd(peers)
  registerRemove(peers)
}

function registerAdd (peers: Command): void {
  peers.command('add')
    .description('add a peer (multiaddr ending in /p2p/<peer id>, printed by `deltamesh init` on that site): told to the running agent, or written to config.toml when the agent is not running')
    .addOption(homeOption())
    .option('--name <name>', 'a short name for the peer, shown by status')
    .argument('<multiaddr>', 'e.g. /ip4/192.0.2.7/tcp/4101/p2p/12D3KooW…')
    .action(async (addr: string, opts: { home?: string, name?: string }) => {
      const viaRunning = await viaAgent(opts.home, async api => { await api.addPeer(addr, opts.name); return true })
      if (viaRunning === true) { process.stdout.write(`added peer ${addr} to the running agent\n`); return }
      const home = resolveHome(opts.home)
      const config = await loadConfig(home.config)
      const selfId = peerIdFromPrivateKey(await loadOrCreatePeerKey(home.peerKey)).toString()
      checkPeerAddress(addr, selfId, config.peers)
      await appendPeer(home.config, addr, opts.name)
      process.stdout.write(`added peer ${addr} to ${home.config} (the agent dials it when started)\n`)
    })
}

function registerRemove (peers: Command): void {
  peers.command('remove')
    .description('forget a peer: taken out of config.toml; a running agent also stops dialling it, refuses it and hangs up on it at once')
    .addOption(homeOption())
    .argument('<peer>', 'its [[peers]] name, its peer id, or its address as listed (`deltamesh peers list`)')
    .action(async (ref: string, opts: { home?: string }) => {
      const removed = await viaAgent(opts.home, async api => await api.removePeer(ref))
      const describe = (p: { peerId: string, name?: string }): string => p.name === undefined ? p.peerId : `${p.name} (${p.peerId})`
      if (removed !== undefined) { process.stdout.write(`removed peer ${describe(removed)}: off config.toml and disconnected (running agent)\n`); return }
      const home = resolveHome(opts.home)
      const config = await loadConfig(home.config)
      const peer = resolvePeerRef(ref, config.peers)
      checkRemovable(peer, config.links)
      await removePeerEntry(home.config, peer.addr)
      process.stdout.write(`removed peer ${describe(peer)} from ${home.config}\n`)
    })
}

function registerList (peers: Command): void {
  peers.command('list', { isDefault: true })
    .description('list peers: live connection state and traffic from the running agent, else the configured peers (the default: `deltamesh peers --home DIR`)')
    .addOption(homeOption())
    .option('--json', 'print the peers as JSON')
    .action(async (opts: { home?: string, json?: boolean }) => {
      const status = await viaAgent(opts.home, async api => await api.status())
      if (status !== undefined) {
        if (opts.json === true) process.stdout.write(JSON.stringify(status.peers) + '\n')
        else process.stdout.write(status.peers.length === 0 ? 'no peers\n' : formatPeers(status) + '\n')
        return
      }
      const home = resolveHome(opts.home)
      const config = await loadConfig(home.config)
      if (opts.json === true) { process.stdout.write(JSON.stringify(config.peers) + '\n'); return }
      process.stdout.write(`agent not running; configured peers in ${home.config}:\n` +
        (config.peers.length === 0 ? '  (none)\n' : table([['NAME', 'ADDRESS'], ...config.peers.map(p => [p.name ?? '-', p.addr])]) + '\n'))
    })
}
