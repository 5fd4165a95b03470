import { readFile, writeFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { fileUrl, metalink3, metalink4, mirrorlist, orderMirrors, selectMirrors, xmlEscape, type MetalinkInput, type MirrorSite } from '../../protocol/metalink.js'
import { decodeSiteStatus, encodeSiteStatus, trimStatus, MAX_STATUS_SERVES, type SiteStatus } from '../../protocol/site-status.js'
import { encodeCanonical } from '../../protocol/codec.js'
import { InvalidMessageError } from '../../protocol/errors.js'
import { MAX_STATUS_BYTES } from '../../protocol/wire-limits.js'

// The metalink formats (protocol/metalink.ts) against golden files: MirrorManager's metalink 3.0 layout with
// mm0 timestamp and alternates, RFC 5854 metalink 4, and a mirrorlist. UPDATE_GOLDEN=1 rewrites the files
// (read their diff before committing). Also the [[serve]] entries of the gossiped site status.

const FIXTURES = fileURLToPath(new URL('../fixtures/golden', import.meta.url))

async function golden (name: string, text: string): Promise<string> {
  const file = `${FIXTURES}/${name}`
  if (process.env.UPDATE_GOLDEN === '1') await writeFile(file, text)
  return await readFile(file, 'utf8')
}

const REPOMD: MetalinkInput = {
  name: 'repomd.xml',
  file: { size: 4057, sha256: '94b09083be84b85d912771d9ce33fe9626196d819f529a4d2a25d9eb6618d8b0', timestampS: 1_779_326_542 },
  alternates: [{ size: 4050, sha256: 'f6e38bcd0bd57735e8dd1279a9e34c1be1e633e7fa27367d585e29554320ae4d', timestampS: 1_779_237_150 }],
  urls: [
    { url: 'https://mirror.brno.example/BaseOS/repodata/repomd.xml', location: 'CZ', preference: 100 },
    { url: 'http://westford.example/rhel&co/BaseOS/repodata/repomd.xml', location: 'US', preference: 90 },
    { url: 'http://lab.example/BaseOS/repodata/repomd.xml', preference: 50 },
  ],
  generatedAtMs: Date.UTC(2026, 11, 7, 23, 0, 0),
  generator: 'deltamesh/0.1.0',
}

describe('metalink and mirrorlist formats', () => {
  it('metalink 3.0 is MirrorManager\'s layout: mm0 timestamp, size, sha256, alternates, resources with protocol, type, location, preference', async () => {
    const text = metalink3(REPOMD)
    expect(text).toBe(await golden('metalink3.xml', text))
    expect(text).toContain('pubdate="Mon, 07 Dec 2026 23:00:00 GMT"')
    // the & of a URL is escaped; an unknown location is left out rather than invented
    expect(text).toContain('http://westford.example/rhel&amp;co/BaseOS/repodata/repomd.xml')
    expect(text).toContain('<url protocol="http" type="http" preference="50">http://lab.example/')
  })

  it('metalink 4 (RFC 5854): size, sha-256, urls with priority 1… in order and lower-case location', async () => {
    const text = metalink4(REPOMD)
    expect(text).toBe(await golden('metalink4.xml', text))
    expect(text).toContain('<published>2026-12-07T23:00:00Z</published>')
    expect(text).not.toContain('alternate')
  })

  it('mirrorlist: a comment naming tree and version, then one base URL per line', async () => {
    const text = mirrorlist('rhel-10/compose/BaseOS', 42, ['https://mirror.brno.example/BaseOS', 'http://westford.example/BaseOS'])
    expect(text).toBe(await golden('mirrorlist.txt', text))
  })

  it('escapes markup in names, and percent-encodes path bytes in URLs (spaces, #, ?, non-UTF-8)', () => {
    expect(xmlEscape('a<b>&"c\'')).toBe('a&lt;b&gt;&amp;&quot;c&apos;')
    expect(fileUrl('http://m.example/tree/', Buffer.from('dir/a b#?.rpm'))).toBe('http://m.example/tree/dir/a%20b%23%3F.rpm')
    expect(fileUrl('http://m.example/tree', Buffer.from([0x6c, 0x61, 0x74, 0xe9]))).toBe('http://m.example/tree/lat%E9')
  })

  it('orders by preference, then the client\'s country, then name; selects only sites on an accepted version', () => {
    const m = [
      { name: 'c', preference: 50, location: 'DE' },
      { name: 'b', preference: 50, location: 'CZ' },
      { name: 'a', preference: 50 },
      { name: 'z', preference: 100, location: 'US' },
    ]
    expect(orderMirrors(m, 'CZ').map(x => x.name)).toEqual(['z', 'b', 'a', 'c'])
    expect(orderMirrors(m).map(x => x.name)).toEqual(['z', 'a', 'b', 'c'])
    const sites: MirrorSite[] = [
      { name: 'new', servedSeq: 3, serves: [{ url: 'http://new.example/t', preference: 10 }] },
      { name: 'stale', servedSeq: 2, serves: [{ url: 'http://stale.example/t', preference: 100 }] },
      { name: 'older', servedSeq: 1, serves: [{ url: 'http://older.example/t', preference: 100 }] },
      { name: 'none', serves: [{ url: 'http://none.example/t', preference: 100 }] },
    ]
    expect(selectMirrors(sites, seq => seq === 3).map(s => s.name)).toEqual(['new'])
    expect(selectMirrors(sites, seq => seq === 3 || seq === 2).map(s => s.name)).toEqual(['stale', 'new'])
  })
})

const PEER = '12D3KooWFKZWnN2wKdSGun6gJBd9BibWjdxE5thtiekjFf9XhtzM'
function withServes (serves: SiteStatus['serves']): SiteStatus {
  return {
    sentAtMs: 1_790_000_000_000, name: 'brno', agentVersion: '0.1.0', startedAtMs: 1_789_990_000_000,
    totals: { bytesUp: 1, bytesDown: 2, rateUp: 0, rateDown: 0 },
    trees: [{ name: 'rhel-10/compose/BaseOS', currentSeq: 4, newestSeq: 4, held: [3, 4] }],
    peers: [{ peerId: PEER, connected: true, rateUp: 0, rateDown: 0 }],
    links: [],
    serves,
  }
}

describe('[[serve]] in the site status', () => {
  it('round-trips; a status without serves is the 10-field tuple older agents read', () => {
    const s = withServes([{ tree: 'rhel-10/compose/BaseOS', url: 'https://mirror.brno.example/BaseOS', location: 'CZ', preference: 100 }, { tree: 'rhel-10/compose/BaseOS', url: 'http://10.0.0.1:8080/b', preference: 1 }])
    expect(decodeSiteStatus(encodeSiteStatus(s))).toEqual(s)
    const none = withServes(undefined)
    const bytes = encodeSiteStatus(none)
    expect(encodeSiteStatus(withServes([]))).toEqual(bytes)
    expect(decodeSiteStatus(bytes).serves).toBeUndefined()
  })

  it.each([
    ['a javascript: URL', ['t/a', 'javascript:alert(1)', null, 1]],
    ['markup in the URL', ['t/a', 'http://x.example/<script>', null, 1]],
    ['a URL with a query', ['t/a', 'http://x.example/a?b=c', null, 1]],
    ['a URL too long', ['t/a', `http://x.example/${'a'.repeat(600)}`, null, 1]],
    ['a lower-case country', ['t/a', 'http://x.example/', 'cz', 1]],
    ['preference 0', ['t/a', 'http://x.example/', null, 0]],
    ['preference 101', ['t/a', 'http://x.example/', null, 101]],
    ['a bad tree name', ['../t', 'http://x.example/', null, 1]],
  ])('rejects a serve entry with %s', (_what, entry) => {
    const fields = ['deltamesh/status', 1, 1, 'n', 'v', 1, [0, 0, 0, 0], [], [], [], [entry]]
    expect(() => decodeSiteStatus(encodeCanonical(fields))).toThrow(InvalidMessageError)
  })

  it('rejects an empty or oversized serves list', () => {
    const base = ['deltamesh/status', 1, 1, 'n', 'v', 1, [0, 0, 0, 0], [], [], []]
    expect(() => decodeSiteStatus(encodeCanonical([...base, []]))).toThrow(InvalidMessageError)
    const many = Array.from({ length: MAX_STATUS_SERVES + 1 }, () => ['t/a', 'http://x.example/', null, 1])
    expect(() => decodeSiteStatus(encodeCanonical([...base, many]))).toThrow(expect.objectContaining({ name: 'LimitExceededError' }))
  })

  it('trimStatus keeps the serves that fit one message, whatever the rest of the status holds', () => {
    const longTree = (i: number): string => `${String(i).padStart(3, '0')}/${'t'.repeat(196)}`
    const big: SiteStatus = {
      ...withServes(Array.from({ length: MAX_STATUS_SERVES }, (_, i) => ({ tree: longTree(i), url: `https://m.example/${'u'.repeat(480)}`, location: 'CZ', preference: 100 }))),
      trees: Array.from({ length: 128 }, (_, i) => ({ name: longTree(i), currentSeq: 2 ** 50, newestSeq: 2 ** 50, held: [1, 2, 3, 4, 5, 6, 7, 8].map(n => 2 ** 50 + n) })),
    }
    const trimmed = trimStatus(big)
    const kept = trimmed.serves?.length ?? 0
    expect(kept).toBeGreaterThan(0)
    expect(kept).toBeLessThan(MAX_STATUS_SERVES)
    expect(encodeSiteStatus(trimmed).byteLength).toBeLessThanOrEqual(MAX_STATUS_BYTES)
    expect(trimStatus(withServes([{ tree: 't/a', url: 'http://x.example/', preference: 1 }])).serves).toHaveLength(1)
  })
})

describe('[[serve]], [[publish]] and [mirrors] in config.toml', () => {
  it('accepts them with defaults, upper-cases the country, and refuses what no status or watcher could use', async () => {
    const { parseConfig } = await import('../../agent/core/config.js')
    const c = parseConfig('[[serve]]\ntree = "a/b"\nurl = "https://m.example/b"\nlocation = "cz"\n\n[[publish]]\ntree = "a/b"\nsrc = "/srv/b"\n\n[mirrors]\nlisten = "0.0.0.0:8480"\n', 'c.toml')
    expect(c.serve).toEqual([{ tree: 'a/b', url: 'https://m.example/b', location: 'CZ', preference: 100 }])
    expect(c.publish).toEqual([{ tree: 'a/b', src: '/srv/b', watch: true, quiet: '5s', maxDelay: '5m', label: '{date}.{seq}' }])
    expect(c.mirrors).toEqual({ listen: '0.0.0.0:8480', requestsPerSecond: 20 })
    expect(parseConfig('', 'c.toml').mirrors.listen).toBeUndefined()
    const refusal = (text: string): string => { try { parseConfig(text, 'c.toml'); return 'accepted' } catch (err) { return (err as Error).message } }
    expect(refusal('[[serve]]\ntree = "a/b"\nurl = "ftp://m.example/b"\n')).toMatch(/serve\[0\]\.url: expected an http:\/\/ or https:\/\/ base URL/)
    expect(refusal('[[serve]]\ntree = "a/b"\nurl = "https://m.example/b"\npreference = 0\n')).toMatch(/preference/)
    expect(refusal('[[publish]]\ntree = "a/b"\nsrc = "relative"\n')).toMatch(/publish\[0\]\.src: expected an absolute path/)
    expect(refusal('[[publish]]\ntree = "a/b"\nsrc = "/s"\nquiet = "soon"\n')).toMatch(/publish\[0\]\.quiet: expected a duration/)
    expect(refusal('[[publish]]\ntree = "a/b"\nsrc = "/s"\nlabel = "{id}"\n')).toMatch(/publish\[0\]\.label/)
    expect(refusal('[[publish]]\ntree = "a/b"\nsrc = "/s"\n[[publish]]\ntree = "a/b"\nsrc = "/t"\n')).toMatch(/one \[\[publish\]\] per tree/)
  })
})
