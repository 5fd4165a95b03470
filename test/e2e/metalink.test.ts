import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { cliOk, waitFor, type Cluster, type Site } from '../../agent/demo/local-cluster.js'
import type { AgentStatus } from '../../agent/api/api.js'
import { pseudoRandomBytes } from '../../agent/demo/tree-gen.js'
import { treeCommands } from '../helpers/tree-commands.js'
import { clusterPerTest } from '../helpers/cluster.js'
import { ensureDebianTool } from '../helpers/debian.js'
import { startStaticServer, type StaticServer } from '../helpers/static-http.js'

// Metalinks from the live network view (issue 19, part 1). Three agents, each with a small static HTTP server
// serving what it mirrors (the publisher its source, the others their subscription path) and a [[serve]] URL
// for it. The stale site stopped following the tree after v1 and is the most preferred. The up-to-date lab
// answers /metalink and /mirrorlist; Debian's aria2c downloads a changed and an unchanged file through the
// metalinks (3.0 and 4), checks each against the hash, and the stale site never serves the changed file.

const TREE = 'fedora/updates/x86_64'
const { subscribe, publish, syncDone } = treeCommands(TREE)
const CHANGED = 'repodata/repomd.xml'
const UNCHANGED = 'Packages/a/aria2-1.36.0-1.x86_64.rpm'

const servers: StaticServer[] = []
const clusters = clusterPerTest({ teardown: async () => { for (const s of servers.splice(0)) await s.close() } })

async function writeTree (root: string, repomd: string): Promise<void> {
  await mkdir(join(root, 'repodata'), { recursive: true })
  await mkdir(join(root, 'Packages/a'), { recursive: true })
  await writeFile(join(root, CHANGED), repomd)
  await writeFile(join(root, UNCHANGED), pseudoRandomBytes('metalink-rpm', 300_000))
}

async function aria2c (args: string[]): Promise<{ code: number | null, output: string }> {
  const binary = await ensureDebianTool('/usr/bin/aria2c', 'aria2')
  return await new Promise((resolve, reject) => {
    const child = spawn(binary, ['--console-log-level=warn', '--summary-interval=0', '--allow-overwrite=true', '--auto-file-renaming=false', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout.on('data', (d: Buffer) => { output += d.toString() })
    child.stderr.on('data', (d: Buffer) => { output += d.toString() })
    child.on('error', reject)
    child.on('close', code => resolve({ code, output }))
  })
}

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')

/** origin publishes; lab and stale subscribe; every site serves over HTTP with a [[serve]] entry; lab answers metalinks. */
async function mirrorNetwork (cluster: Cluster, source: string): Promise<{ origin: Site, lab: Site, stale: Site, http: Map<string, StaticServer> }> {
  const origin = await cluster.addSite('origin')
  const lab = await cluster.addSite('lab')
  const stale = await cluster.addSite('stale')
  await cluster.wire(TREE, origin)
  const roots = new Map([[origin, source], [lab, join(cluster.dir, 'lab-mirror')], [stale, join(cluster.dir, 'stale-mirror')]])
  const settings = new Map([[origin, { location: 'CZ', preference: 50 }], [lab, { location: 'US', preference: 80 }], [stale, { location: 'AU', preference: 100 }]])
  const http = new Map<string, StaticServer>()
  for (const [site, root] of roots) {
    const server = await startStaticServer(root, `/${site.name}/x86_64`)
    servers.push(server)
    http.set(site.name, server)
    await cluster.editConfig(site, { dashboard: { statusIntervalMs: 300 }, serve: [{ tree: TREE, url: `${server.url}/${site.name}/x86_64`, ...settings.get(site) }] })
  }
  await cluster.editConfig(lab, { mirrors: { listen: '127.0.0.1:0', requestsPerSecond: 50 } })
  return { origin, lab, stale, http }
}

describe('metalinks and mirrorlists from the network view (three real agents, aria2c)', () => {
  it('lists the stale mirror for the unchanged file only, and aria2c downloads both with the hash checked', async () => {
    const cluster = await clusters.create('deltamesh-metalink-')
    const source = join(cluster.dir, 'source')
    await writeTree(source, '<repomd>v1</repomd>\n')
    const { origin, lab, stale, http } = await mirrorNetwork(cluster, source)
    for (const s of cluster.sites) await cluster.start(s)
    await subscribe(cluster, lab)
    await subscribe(cluster, stale)
    const seq1 = await publish(origin, source, 'v1')
    await Promise.all([syncDone(lab, seq1), syncDone(stale, seq1)])
    // the stale site stops following the tree: its web server keeps serving v1
    await cliOk(['unsubscribe', '--home', stale.home, TREE])
    await writeTree(source, '<repomd>version two, longer</repomd>\n')
    const seq2 = await publish(origin, source, 'v2')
    await syncDone(lab, seq2)

    const labStatus = await cluster.status(lab)
    expect(labStatus.trees.find(t => t.name === TREE)?.serves).toEqual([{ url: `${http.get('lab')?.url}/lab/x86_64`, location: 'US', preference: 80, listed: true }])
    expect(await cliOk(['status', '--home', lab.home])).toContain(`${http.get('lab')?.url}/lab/x86_64`)
    const base = (labStatus as AgentStatus & { mirrors?: { url: string } }).mirrors?.url as string
    expect(base).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/)
    const get = async (q: string): Promise<{ status: number, type: string, body: string }> => {
      const res = await fetch(new URL(q, base))
      return { status: res.status, type: res.headers.get('content-type') ?? '', body: await res.text() }
    }
    // wait until the lab's view has every site fresh on the versions above
    await waitFor('the network view to show origin and lab on v2, stale on v1', async () => {
      const list = await get(`mirrorlist?tree=${TREE}`)
      const meta = await get(`metalink?tree=${TREE}&path=${UNCHANGED}`)
      return list.status === 200 && list.body.split('\n').length === 4 && meta.body.includes('/stale/')
    }, 30_000)

    // the dashboard's snapshot has every site's [[serve]] URLs (the page lists them under the site's cell)
    const snapshot = await (await fetch(new URL('/api/snapshot', labStatus.dashboard?.url))).json() as { sites: Array<{ name: string, status?: { serves?: Array<{ url: string }> } }> }
    expect(snapshot.sites.map(x => [x.name, x.status?.serves?.map(v => v.url)]).sort()).toEqual([...http].map(([name, server]) => [name, [`${server.url}/${name}/x86_64`]]).sort())

    // mirrorlist: the sites on v2 only, by preference
    const list = await get(`mirrorlist?tree=${TREE}`)
    expect(list.body).toBe(`# tree = ${TREE} version = ${seq2}\n${http.get('lab')?.url}/lab/x86_64\n${http.get('origin')?.url}/origin/x86_64\n`)

    // the changed file: v2's size and hash, v1's as an alternate, and no URL of the stale site
    const newRepomd = await readFile(join(source, CHANGED))
    const changed = await get(`metalink?tree=${TREE}&path=${CHANGED}`)
    expect(changed.status).toBe(200)
    expect(changed.type).toBe('application/metalink+xml')
    expect(changed.body).toContain(`<size>${newRepomd.byteLength}</size>`)
    expect(changed.body).toContain(`<hash type="sha256">${sha256(newRepomd)}</hash>`)
    expect(changed.body).toContain(`<mm0:alternate>`)
    expect(changed.body).toContain(`<hash type="sha256">${sha256(Buffer.from('<repomd>v1</repomd>\n'))}</hash>`)
    expect(changed.body).not.toContain('/stale/')
    // the unchanged file: the stale site too, first (preference 100); the client's country does not outrank preference
    const unchanged = await get(`metalink?tree=${TREE}&path=${UNCHANGED}&format=metalink4&country=CZ`)
    expect(unchanged.type).toBe('application/metalink4+xml')
    expect([...unchanged.body.matchAll(/<url location="(\w+)" priority="(\d)">/g)].map(m => m[1])).toEqual(['au', 'us', 'cz'])

    // aria2c follows each metalink, checks the hash, and the stale site never serves the changed file
    const out = await mkdtemp(join(tmpdir(), 'deltamesh-aria2-'))
    try {
      const a = await aria2c(['-d', out, `${base}metalink?tree=${TREE}&path=${CHANGED}`])
      expect(a.code, a.output).toBe(0)
      expect(await readFile(join(out, 'repomd.xml'))).toEqual(newRepomd)
      const b = await aria2c(['-d', out, `${base}metalink?tree=${TREE}&path=${UNCHANGED}&format=metalink4`])
      expect(b.code, b.output).toBe(0)
      expect(await readFile(join(out, 'aria2-1.36.0-1.x86_64.rpm'))).toEqual(await readFile(join(source, UNCHANGED)))
    } finally {
      await rm(out, { recursive: true, force: true })
    }
    const staleServed = http.get('stale')?.requests ?? []
    expect(staleServed.filter(r => r.path.endsWith(CHANGED))).toEqual([])
    expect(staleServed.filter(r => r.path.endsWith(UNCHANGED) && r.status === 200).length).toBeGreaterThan(0)

    // bad queries: one line, no stack
    for (const [q, status, reason] of [
      ['metalink?tree=no/such&path=a', 404, /not known here/],
      [`metalink?tree=${TREE}&path=repodata/none.xml`, 404, /no repodata\/none.xml/],
      [`metalink?tree=${TREE}&path=repodata`, 404, /is a directory/],
      [`metalink?tree=${TREE}&path=../etc/passwd`, 400, /path=/],
      [`metalink?tree=${TREE}`, 400, /missing path=/],
      [`mirrorlist?tree=${TREE}&country=Czechia`, 400, /country=/],
      ['index.html', 404, /answers \/metalink/],
    ] as const) {
      const r = await get(q)
      expect([r.status, r.body]).toEqual([status, expect.stringMatching(reason)])
      expect(r.body.trim().split('\n')).toHaveLength(1)
      expect(r.body).not.toMatch(/ at .*\.js:\d+/)
    }
    // a burst over [mirrors] requestsPerSecond (50) is turned away with 429 (or 503 beyond 16 at once), not queued
    const burst = await Promise.all(Array.from({ length: 80 }, async () => (await get(`mirrorlist?tree=${TREE}`)).status))
    expect(burst.filter(s => s === 429).length).toBeGreaterThan(0)
    expect(burst.filter(s => s !== 200 && s !== 429 && s !== 503)).toEqual([])
  }, 240_000)
})
