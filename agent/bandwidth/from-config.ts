// Builds the BandwidthManager from config.toml and HOME/limits.json: the agent at start, and `deltamesh
// limit` when no agent runs (it then edits limits.json through the same rules the agent applies).

import { peerIdFromString } from '@libp2p/peer-id'
import type { AgentConfig } from '../core/config.js'
import type { HomeLayout } from '../core/home.js'
import { BandwidthManager, type BandwidthInit } from './manager.js'
import { loadOverrides, saveOverrides } from './overrides.js'
import { peerIdOfAddr } from '../net/peer-address.js'
import { parseRate } from '../core/rate.js'
import { parseWindow } from '../core/schedule.js'

/** A [[links]] peer reference: a [[peers]] name, else a peer id. */
export function resolvePeerRef (config: AgentConfig, ref: string): string {
  const byName = config.peers.find(p => p.name === ref)
  return byName === undefined ? peerIdFromString(ref).toString() : peerIdOfAddr(byName.addr)
}

export async function bandwidthFromConfig (config: AgentConfig, home: HomeLayout, extra: Partial<BandwidthInit> = {}): Promise<BandwidthManager> {
  const names = new Map(config.peers.flatMap(p => p.name === undefined ? [] : [[peerIdOfAddr(p.addr), p.name] as const]))
  return new BandwidthManager({
    global: { base: { up: parseRate(config.limits.up), down: parseRate(config.limits.down) }, schedule: config.limits.schedule.map(parseWindow) },
    links: config.links.map(l => ({
      name: l.name,
      peers: l.peers.map(ref => resolvePeerRef(config, ref)),
      base: { up: parseRate(l.up), down: parseRate(l.down) },
      schedule: l.schedule.map(parseWindow),
    })),
    treeWeights: config.fairness.treeWeights,
    overrides: await loadOverrides(home.limitOverrides),
    persist: async overrides => await saveOverrides(home.limitOverrides, overrides),
    peerLabel: peerId => names.get(peerId) ?? peerId,
    ...extra,
  })
}
