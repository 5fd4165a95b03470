import { describe, expect, it } from 'vitest'
import { peerIdFromString } from '@libp2p/peer-id'
import { checkPeerAddress, checkRemovable, isUnspecified, resolvePeerRef } from '../../agent/net/peer-address.js'
import { Dialer, type DialerComponents } from '../../agent/net/dialer.js'
import { parseConfig } from '../../agent/core/config.js'

const A = '12D3KooWGzBR6bgTHE3E1G7nNxF4e5bCxQ7dKMrSW1ZhH8Dk1WqP'
const B = '12D3KooWSWadyF8y8cgAKnjUFUUR5Hux8SsMisYB6y5wESBcVgdy'
const SELF = '12D3KooWFE9B7HCHcqh197do6r3v4zf92QXs5Nekxx5K4xZuvcj7'

describe('peers add: what an address must be', () => {
  it('accepts a dialable address of another, unlisted peer and returns its id', () => {
    expect(checkPeerAddress(`/ip4/127.0.0.1/tcp/4101/p2p/${A}`, SELF, [{ addr: `/ip4/127.0.0.1/tcp/4102/p2p/${B}` }])).toBe(A)
  })

  it('refuses an unspecified address, the own id, a listed peer and an address without /p2p/, saying what to do', () => {
    const refusal = (addr: string, listed: Array<{ addr: string, name?: string }> = []): string => {
      try { checkPeerAddress(addr, SELF, listed); return 'accepted' } catch (err) { expect(err).toHaveProperty('name', 'PeerAddressError'); return (err as Error).message }
    }
    expect(refusal(`/ip4/0.0.0.0/tcp/4101/p2p/${A}`)).toMatch(/unspecified address .* --announce/)
    expect(refusal(`/ip6/::/tcp/4101/p2p/${A}`)).toMatch(/unspecified/)
    expect(refusal(`/ip4/127.0.0.1/tcp/4101/p2p/${SELF}`)).toMatch(/own peer id/)
    expect(refusal(`/ip4/127.0.0.1/tcp/4103/p2p/${B}`, [{ addr: `/ip4/127.0.0.1/tcp/4102/p2p/${B}`, name: 'brno' }])).toMatch(/listed already as brno/)
    expect(refusal('/ip4/127.0.0.1/tcp/4101')).toMatch(/no \/p2p\//)
    expect(refusal('not an address')).toMatch(/not a multiaddr/)
  })

  it('knows the unspecified addresses', () => {
    expect(isUnspecified('/ip4/0.0.0.0/tcp/1')).toBe(true)
    expect(isUnspecified('/ip6/::/tcp/1')).toBe(true)
    expect(isUnspecified('/ip4/127.0.0.1/tcp/1')).toBe(false)
  })
})

describe('peers remove: which listed peer a reference names', () => {
  const listed = [{ addr: `/ip4/127.0.0.1/tcp/4101/p2p/${A}`, name: 'brno' }, { addr: `/ip4/127.0.0.1/tcp/4102/p2p/${B}` }]

  it('by name, by peer id or by address', () => {
    expect(resolvePeerRef('brno', listed)).toEqual({ peerId: A, addr: listed[0]!.addr, name: 'brno' })
    expect(resolvePeerRef(B, listed)).toEqual({ peerId: B, addr: listed[1]!.addr, name: undefined })
    expect(resolvePeerRef(`/ip4/10.0.0.1/tcp/1/p2p/${A}`, listed).peerId).toBe(A)
  })

  it('refuses a peer not listed, naming those that are', () => {
    expect(() => resolvePeerRef('westford', listed)).toThrow(/no peer "westford" is listed here .*listed: brno, 12D3KooWS/)
    expect(() => resolvePeerRef(SELF, [])).toThrow(expect.objectContaining({ name: 'UnknownPeerError', message: expect.stringContaining('none is listed') }))
  })

  it('refuses to remove a peer a [[links]] entry names (by name or id)', () => {
    const brno = resolvePeerRef('brno', listed)
    expect(() => checkRemovable(brno, [{ name: 'wan', peers: ['brno'] }])).toThrow(/in \[\[links\]\] wan: take it out/)
    expect(() => checkRemovable(brno, [{ name: 'wan', peers: [A] }])).toThrow(/wan/)
    expect(() => checkRemovable(brno, [{ name: 'wan', peers: [B] }])).not.toThrow()
  })
})

describe('a site that only dials out is listed by /p2p/<peer id> alone', () => {
  it('peers add and config.toml accept it; an address with neither a host nor a peer id is still refused', () => {
    expect(checkPeerAddress(`/p2p/${A}`, SELF, [])).toBe(A)
    const config = parseConfig(`[[peers]]\naddr = "/p2p/${A}"\nname = "build"\n`, 'config.toml')
    expect(config.peers).toEqual([{ addr: `/p2p/${A}`, name: 'build' }])
    expect(() => parseConfig(`[[peers]]\naddr = "/tcp/4101/p2p/${A}"\n`, 'config.toml')).toThrow(/or \/p2p\/12D3KooW… alone/)
    expect(parseConfig('[agent]\nlisten = []\n', 'config.toml').agent.listen).toEqual([])
  })

  it('the dialer keeps it as a peer but never dials it, neither at start nor after a disconnect', async () => {
    const dials: string[] = []
    const listeners = new Map<string, (evt: CustomEvent<unknown>) => void>()
    const libp2p = {
      dial: async (target: unknown) => { dials.push(String(target)); throw new Error('unreachable') },
      getConnections: () => [],
      addEventListener: (type: string, fn: (evt: CustomEvent<unknown>) => void) => { listeners.set(type, fn) },
      removeEventListener: (type: string) => { listeners.delete(type) },
      logger: { forComponent: () => () => {} },
    } as unknown as DialerComponents['libp2p']
    const dialer = new Dialer({ libp2p }, { peers: [`/p2p/${A}`], backoffsMs: [5] })
    await dialer.start()
    dialer.add(`/ip4/127.0.0.1/tcp/9/p2p/${B}`)
    listeners.get('peer:disconnect')?.(new CustomEvent('peer:disconnect', { detail: peerIdFromString(A) }))
    await new Promise(resolve => setTimeout(resolve, 50))
    await dialer.stop()
    expect(dialer.peers().sort()).toEqual([A, B].sort())
    // only B, which has an address, was dialled (and redialled after its failures)
    expect(dials.length).toBeGreaterThan(0)
    expect(dials.every(d => d.endsWith(B))).toBe(true)
  })
})
