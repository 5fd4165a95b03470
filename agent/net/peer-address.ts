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
