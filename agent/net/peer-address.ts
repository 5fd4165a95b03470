// What `peers add` (and the agent's addPeer) accepts: an address another site can dial, or /p2p/<peer id> alone
// for a site that only dials out, of a peer that is not this site and not listed already. Each refusal says what
// to do instead.
import { multiaddr } from '@multiformats/multiaddr'
import { peerIdFromString } from '@libp2p/peer-id'
import { DeltameshError } from '../../protocol/errors.js'

export class PeerAddressError extends DeltameshError {
  static override name = 'PeerAddressError'
  constructor (readonly addr: string, reason: string) {
    super(`${addr}: ${reason}`)
    this.name = 'PeerAddressError'
  }
}

/** 0.0.0.0 and :: mean "every interface" to a listener; nobody can dial them. */
export function isUnspecified (addr: string): boolean {
  return multiaddr(addr).getComponents().some(c => (c.name === 'ip4' && c.value === '0.0.0.0') || (c.name === 'ip6' && (c.value === '::' || c.value === '0:0:0:0:0:0:0:0')))
}

/** The peer id at the end of a /p2p/ multiaddr, in canonical form. */
export function peerIdOfAddr (addr: string): string {
  const id = multiaddr(addr).getComponents().findLast(c => c.name === 'p2p')?.value
  if (id === undefined) throw new Error(`${addr}: no /p2p/<peer id> at the end`)
  return peerIdFromString(id).toString()
}

/**
 * Checks `addr` for `peers add`; returns its peer id. `listed`: the [[peers]] already configured (address and
 * optional name), `selfId`: this site's peer id.
 */
export function checkPeerAddress (addr: string, selfId: string, listed: ReadonlyArray<{ addr: string, name?: string }>): string {
  let id: string | undefined
  try {
    id = multiaddr(addr).getComponents().findLast(c => c.name === 'p2p')?.value
  } catch (err) {
    throw new PeerAddressError(addr, `not a multiaddr (${(err as Error).message}); copy the line \`deltamesh init\` printed on that site`)
  }
  if (id === undefined) throw new PeerAddressError(addr, 'no /p2p/<peer id> at the end; copy the line `deltamesh init` printed on that site')
  const peerId = peerIdFromString(id).toString()
  if (isUnspecified(addr)) {
    throw new PeerAddressError(addr, 'an unspecified address (0.0.0.0 or ::) means "every interface" to the site that listens, and cannot be dialled: use that site\'s real address (`deltamesh init --announce /ip4/<its address>/tcp/<port>` there prints it)')
  }
  if (peerId === selfId) throw new PeerAddressError(addr, 'this is this site\'s own peer id: add the other sites\' addresses here')
  const same = listed.find(p => { try { return peerIdOfAddr(p.addr) === peerId } catch { return false } })
  if (same !== undefined) {
    throw new PeerAddressError(addr, `peer ${peerId} is listed already${same.name === undefined ? '' : ` as ${same.name}`} (${same.addr}); to change its address, edit its [[peers]] entry in config.toml`)
  }
  return peerId
}

/** `peers remove` (or `limit --peer`) of a peer this site does not list. */
export class UnknownPeerError extends DeltameshError {
  static override name = 'UnknownPeerError'
  constructor (readonly ref: string, known: ReadonlyArray<{ name?: string, peerId: string }>) {
    super(`no peer ${JSON.stringify(ref.slice(0, 100))} is listed here (a [[peers]] name, a peer id or its address; ` +
      `${known.length === 0 ? 'none is listed' : `listed: ${known.map(p => p.name ?? p.peerId).join(', ')}`}; see \`deltamesh peers list\`)`)
    this.name = 'UnknownPeerError'
  }
}

export interface ListedPeer { peerId: string, addr: string, name?: string }

/**
 * The listed peer that `ref` names: its [[peers]] name, its peer id, or its address as listed. Throws
 * UnknownPeerError when none does.
 */
export function resolvePeerRef (ref: string, listed: ReadonlyArray<{ addr: string, name?: string }>): ListedPeer {
  const peers = listed.flatMap(p => { try { return [{ peerId: peerIdOfAddr(p.addr), addr: p.addr, name: p.name }] } catch { return [] } })
  const byName = peers.find(p => p.name === ref)
  if (byName !== undefined) return byName
  let id: string | undefined
  try { id = ref.startsWith('/') ? peerIdOfAddr(ref) : peerIdFromString(ref).toString() } catch { id = undefined }
  const byId = peers.find(p => p.peerId === id)
  if (byId === undefined) throw new UnknownPeerError(ref, peers)
  return byId
}

/** A peer named by a [[links]] entry cannot simply go: the link would name a stranger (or, by name, nobody). */
export function checkRemovable (peer: ListedPeer, links: ReadonlyArray<{ name: string, peers: string[] }>): void {
  const naming = links.filter(l => l.peers.some(ref => ref === peer.name || ref === peer.peerId))
  if (naming.length > 0) {
    throw new PeerAddressError(peer.name ?? peer.peerId, `is in [[links]] ${naming.map(l => l.name).join(', ')}: take it out of that link's peers in config.toml first`)
  }
}
