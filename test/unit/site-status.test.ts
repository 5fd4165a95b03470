import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { encodeCanonical } from '../../protocol/codec.js'
import { InvalidMessageError } from '../../protocol/errors.js'
import { decodeSiteStatus, encodeSiteStatus, trimStatus, MAX_HELD_SEQS, MAX_LINK_NAME_BYTES, MAX_SITE_NAME_BYTES, MAX_STATUS_LINKS, MAX_STATUS_PEERS, MAX_STATUS_TREES, type SiteStatus } from '../../protocol/site-status.js'
import { MAX_TREE_NAME_BYTES } from '../../protocol/limits.js'
import { MAX_STATUS_BYTES } from '../../protocol/wire-limits.js'

const PEER = '12D3KooWFKZWnN2wKdSGun6gJBd9BibWjdxE5thtiekjFf9XhtzM'

/** A status like a site mirroring three trees with two peers sends. */
function typical (): SiteStatus {
  return {
    sentAtMs: 1_790_000_000_000, name: 'brisbane', agentVersion: '0.1.0', startedAtMs: 1_789_990_000_000,
    totals: { bytesUp: 123_456_789, bytesDown: 987_654_321, rateUp: 1_000_000, rateDown: 250_000 },
    trees: [
      { name: 'rhel-10/compose/BaseOS', currentSeq: 41, newestSeq: 42, held: [39, 40, 41], sync: { seq: 42, phase: 'fetching', bytesDone: 1_000_000, bytesTotal: 9_000_000, rateBps: 800_000, startedAtMs: 1_789_999_990_000 } },
      { name: 'rhel-10/compose/AppStream', currentSeq: 42, newestSeq: 42, held: [40, 41, 42] },
      { name: 'fedora/updates/x86_64', held: [] },
    ],
    peers: [{ peerId: PEER, connected: true, rateUp: 1_000_000, rateDown: 0 }, { peerId: PEER.replace('M', 'N'), connected: false, rateUp: 0, rateDown: 250_000 }],
    links: [{ name: 'wan-brq', limitUp: 10_000_000, limitDown: undefined, rateUp: 1_000_000, rateDown: 250_000, peers: 2 }],
  }
}

/** Re-encodes a typical status with one field of the tuple replaced (to forge what a hostile site might send). */
function forged (index: number, value: unknown): Uint8Array {
  const s = typical()
  const fields: unknown[] = [
    'deltamesh/status', 1, s.sentAtMs, s.name, s.agentVersion, s.startedAtMs, [1, 2, 3, 4],
    [['a/b', 1, 2, [1], null]], [[PEER, true, 0, 0]], [['wan', null, 5, 0, 0, 1]],
  ]
  fields[index] = value
  return encodeCanonical(fields)
}

describe('site STATUS message', () => {
  it('round-trips, and a typical status is a few hundred bytes', () => {
    const s = typical()
    const bytes = encodeSiteStatus(s)
    expect(decodeSiteStatus(bytes)).toEqual(s)
    expect(bytes.byteLength).toBeLessThan(600)
    process.stdout.write(`site status: ${bytes.byteLength} bytes for 3 trees, 2 peers, 1 link\n`)
  })

  it('the largest status the bounds allow still fits one gossip message', () => {
    const longTree = (i: number): string => `${String(i).padStart(3, '0')}/${'t'.repeat(MAX_TREE_NAME_BYTES - 4)}`
    const max: SiteStatus = {
      ...typical(),
      name: 'n'.repeat(MAX_SITE_NAME_BYTES),
      agentVersion: 'v'.repeat(32),
      totals: { bytesUp: Number.MAX_SAFE_INTEGER, bytesDown: Number.MAX_SAFE_INTEGER, rateUp: Number.MAX_SAFE_INTEGER, rateDown: Number.MAX_SAFE_INTEGER },
      trees: Array.from({ length: MAX_STATUS_TREES }, (_, i) => ({
        name: longTree(i), currentSeq: Number.MAX_SAFE_INTEGER - 1, newestSeq: Number.MAX_SAFE_INTEGER,
        held: Array.from({ length: MAX_HELD_SEQS }, (_, j) => Number.MAX_SAFE_INTEGER - 10 + j),
        sync: { seq: Number.MAX_SAFE_INTEGER, phase: 'fetching-manifest' as const, bytesDone: Number.MAX_SAFE_INTEGER, bytesTotal: Number.MAX_SAFE_INTEGER, rateBps: Number.MAX_SAFE_INTEGER, startedAtMs: Number.MAX_SAFE_INTEGER },
        unservableSeq: Number.MAX_SAFE_INTEGER,
      })),
      peers: Array.from({ length: MAX_STATUS_PEERS }, () => ({ peerId: 'Q'.repeat(64), connected: true, rateUp: Number.MAX_SAFE_INTEGER, rateDown: Number.MAX_SAFE_INTEGER })),
      links: Array.from({ length: MAX_STATUS_LINKS }, () => ({ name: 'l'.repeat(MAX_LINK_NAME_BYTES), limitUp: Number.MAX_SAFE_INTEGER, limitDown: Number.MAX_SAFE_INTEGER, rateUp: Number.MAX_SAFE_INTEGER, rateDown: Number.MAX_SAFE_INTEGER, peers: Number.MAX_SAFE_INTEGER })),
    }
    const bytes = encodeSiteStatus(max)
    expect(bytes.byteLength).toBeLessThanOrEqual(MAX_STATUS_BYTES)
  })

  it('a publisher\'s unservable version travels as a sixth tree field, only when set (five-field trees still decode)', () => {
    const s = typical()
    s.trees[1] = { ...s.trees[1]!, unservableSeq: 42 }
    expect(decodeSiteStatus(encodeSiteStatus(s))).toEqual(s)
    expect(decodeSiteStatus(forged(7, [['a/b', 1, 2, [1], null]])).trees[0]).toEqual({ name: 'a/b', currentSeq: 1, newestSeq: 2, held: [1], sync: undefined })
    expect(decodeSiteStatus(forged(7, [['a/b', 1, 2, [1], null, 2]])).trees[0]?.unservableSeq).toBe(2)
    expect(() => decodeSiteStatus(forged(7, [['a/b', 1, 2, [1], null, 0]]))).toThrow(InvalidMessageError)
    expect(() => decodeSiteStatus(forged(7, [['a/b', 1, 2, [1], null, 'x']]))).toThrow(InvalidMessageError)
    expect(() => decodeSiteStatus(forged(7, [['a/b', 1, 2, [1], null, 2, 3]]))).toThrow(InvalidMessageError)
  })

  it('trimStatus cuts lists and names to what one message carries', () => {
    const s = typical()
    const big = { ...s, name: 'é'.repeat(80), trees: Array.from({ length: MAX_STATUS_TREES + 5 }, (_, i) => ({ name: `t/${i}`, held: [] })) }
    const trimmed = trimStatus(big)
    expect(trimmed.trees).toHaveLength(MAX_STATUS_TREES)
    expect(Buffer.byteLength(trimmed.name)).toBeLessThanOrEqual(MAX_SITE_NAME_BYTES)
    expect(() => encodeSiteStatus(trimmed)).not.toThrow()
    expect(() => encodeSiteStatus(big)).toThrow(expect.objectContaining({ name: 'LimitExceededError' }))
  })

  it.each([
    ['wrong tag', 0, 'deltamesh/heads'],
    ['newer format version', 1, 2],
    ['negative time', 2, -1],
    ['name too long', 3, 'x'.repeat(MAX_SITE_NAME_BYTES + 1)],
    ['totals not 4 numbers', 6, [1, 2, 3]],
    ['fractional counter', 6, [1.5, 2, 3, 4]],
    ['too many trees', 7, Array.from({ length: MAX_STATUS_TREES + 1 }, (_, i) => [`t/${i}`, null, null, [], null])],
    ['bad tree name', 7, [['../etc', null, null, [], null]]],
    ['tree listed twice', 7, [['a/b', null, null, [], null], ['a/b', null, null, [], null]]],
    ['held not ascending', 7, [['a/b', 2, 2, [2, 1], null]]],
    ['seq 0', 7, [['a/b', 0, null, [], null]]],
    ['unknown sync phase', 7, [['a/b', 1, 2, [1], [2, 'exploding', 0, 10, 0, 0]]]],
    ['bytesDone above bytesTotal', 7, [['a/b', 1, 2, [1], [2, 'fetching', 11, 10, 0, 0]]]],
    ['peer id not base58', 8, [['not a peer id!', true, 0, 0]]],
    ['connected not a boolean', 8, [[PEER, 1, 0, 0]]],
    ['too many peers', 8, Array.from({ length: MAX_STATUS_PEERS + 1 }, () => [PEER, true, 0, 0])],
    ['link limit 0', 9, [['wan', 0, null, 0, 0, 1]]],
    ['link as a map', 9, [new Map([['name', 'wan']])]],
  ])('rejects %s', (_what, index, value) => {
    expect(() => decodeSiteStatus(forged(index, value))).toThrow(InvalidMessageError)
  })

  it('accepts the forging baseline (so the rejections above are about the changed field)', () => {
    expect(() => decodeSiteStatus(forged(0, 'deltamesh/status'))).not.toThrow()
  })

  it('rejects anything over the size limit before decoding it', () => {
    expect(() => decodeSiteStatus(new Uint8Array(MAX_STATUS_BYTES + 1))).toThrow(expect.objectContaining({ name: 'LimitExceededError' }))
  })

  it('random bytes and random msgpack only ever raise InvalidMessageError', () => {
    const onlyInvalid = (bytes: Uint8Array): void => {
      try { decodeSiteStatus(bytes) } catch (err) { if (!(err instanceof InvalidMessageError)) throw err }
    }
    fc.assert(fc.property(fc.uint8Array({ maxLength: 2048 }), onlyInvalid), { numRuns: 2000 })
    const value = fc.anything({ maxDepth: 3 })
    fc.assert(fc.property(fc.array(value, { maxLength: 12 }), fields => onlyInvalid(encodeCanonical(['deltamesh/status', 1, ...fields.slice(2)]))), { numRuns: 2000 })
  })
})
