import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium, type Browser, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Cluster, cliOk, type Site } from '../../agent/demo/local-cluster.js'
import type { AgentStatus } from '../../agent/api/api.js'
import { generateTree, type TreeSpec } from '../../agent/demo/tree-gen.js'
import { CHROMIUM_ARGS, ensureChromium } from '../helpers/chromium.js'
import { chunkSet } from '../helpers/cluster.js'

// Three real agents on 127.0.0.1 (an origin and two labs) and a real browser on one lab's dashboard: it must
// list all three sites and the tree's versions, show the lab's sync in progress and then complete. The lab's
// download is capped ([limits] down) so the sync lasts long enough to be seen. Then /metrics of every site
// is scraped and its byte counters are checked against what the sync moved.

const TREE = 'lab/compose/BaseOS'
/** ~30 MB: at the lab's 4 MB/s cap the sync takes ~7 s, several dashboard refreshes. */
const SPEC: TreeSpec = { seed: 'e2e-dashboard', files: 150, largeBytes: 24 * 1024 * 1024, largeFiles: 2, smallMax: 64 * 1024 }
const LAB_DOWN = '4MB/s'
const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts', import.meta.url))

let cluster: Cluster
let origin: Site
let labA: Site
let labB: Site
let source: string
let browser: Browser | undefined
let published: Promise<number> | undefined

beforeAll(async () => {
  const executablePath = await ensureChromium()
  cluster = await Cluster.create('deltamesh-dash-')
  source = join(cluster.dir, 'source')
  await generateTree(source, SPEC)
  origin = await cluster.addSite('origin')
  labA = await cluster.addSite('lab-a')
  labB = await cluster.addSite('lab-b')
  await cluster.wire(TREE, origin)
  for (const s of cluster.sites) await cluster.editConfig(s, { dashboard: { statusIntervalMs: 500 } })
  await cluster.editConfig(labA, { limits: { down: LAB_DOWN } })
  await Promise.all(cluster.sites.map(async s => await cluster.start(s)))
  for (const lab of [labA, labB]) await cliOk(['subscribe', '--home', lab.home, TREE, '--to', join(cluster.dir, `${lab.name}-mirror`)])
  await mkdir(ARTIFACTS, { recursive: true })
  browser = await chromium.launch({ executablePath, headless: true, args: CHROMIUM_ARGS })
}, 600_000)

afterAll(async () => {
  await browser?.close()
  await cluster?.cleanup()
})

/** Publishes v1 once; both tests need it, and the browser test wants to watch it arrive. */
async function publishOnce (): Promise<number> {
  published ??= cliOk(['publish', '--home', origin.home, TREE, source, '--label', 'compose-1', '--json'])
    .then(out => (JSON.parse(out) as { seq: number }).seq)
  return await published
}

async function dashboardUrl (site: Site): Promise<string> {
  const status = await cluster.status(site)
  if (status.dashboard === undefined) throw new Error(`${site.name}: status shows no dashboard`)
  return status.dashboard.url
}

const cellOf = (page: Page, site: string): ReturnType<Page['locator']> => page.locator(`#matrix tr[data-site="${site}"] td[data-tree="${TREE}"]`)

describe('dashboard (three real agents, headless chromium)', () => {
  it("a lab's dashboard lists every site and the tree's versions, and shows its sync in progress, then complete", async () => {
    const page = await (browser as Browser).newPage({ viewport: { width: 1280, height: 1000 } })
    const errors: string[] = []
    page.on('pageerror', err => errors.push(err.message))
    page.on('console', msg => { if (msg.type() === 'error') errors.push(msg.text()) })
    const url = await dashboardUrl(labA)
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/)
    const loadStart = Date.now()
    await page.goto(url)
    await page.locator('#live.on').waitFor({ timeout: 10_000 })
    const firstRenderMs = Date.now() - loadStart

    // all three sites, each heard from (state ok), this one marked
    for (const name of ['origin', 'lab-a', 'lab-b']) {
      await page.locator(`#matrix tr[data-site="${name}"][data-state="ok"]`).waitFor({ timeout: 15_000 })
    }
    await expect(page.locator('#matrix tr[data-site="lab-a"]').innerText()).resolves.toContain('(this site)')

    const seq = await publishOnce()
    // in progress: the lab's own cell shows a percentage below 100 while bytes arrive
    const syncing = cellOf(page, 'lab-a').and(page.locator('[data-phase="syncing"]'))
    await syncing.filter({ hasText: /syncing (?:[1-9]|[1-9]\d)%/ }).waitFor({ timeout: 30_000 })
    const midText = await syncing.innerText()
    expect(midText).toMatch(/v1 syncing \d+%/)
    expect(midText).toMatch(/fetching · [\d.]+ \w+ of [\d.]+ MiB/)
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-syncing.png'), fullPage: true })

    // then complete, at every site (the other two as told by their status gossip)
    for (const name of ['lab-a', 'lab-b', 'origin']) {
      await cellOf(page, name).and(page.locator('[data-phase="complete"]')).filter({ hasText: `v${seq} ✓` }).waitFor({ timeout: 60_000 })
    }
    // the version history: seq, label, size, bytes that crossed the network, held by all three
    const history = page.locator(`[data-history="${TREE}"] tr[data-seq="${seq}"]`)
    await history.filter({ hasText: 'lab-b' }).filter({ hasText: 'origin' }).waitFor({ timeout: 15_000 })
    const row = await history.innerText()
    expect(row).toContain('compose-1')
    expect(row).toContain('complete')
    expect(row).toMatch(/MiB \(\d+\.\d %\)/)
    // links: the lab's cap shows as the limit of its link; the throughput plot has drawn its download
    await expect(page.locator('#links tr[data-link="global"]').innerText()).resolves.toContain('4.0MB/s') // as written in config.toml: rates are decimal everywhere
    await expect(page.locator('#plot polyline').count()).resolves.toBeGreaterThan(0)
    // the live feed: this agent's events of the sync, from the same stream as `deltamesh events`
    await page.locator('#feed tr[data-event="sync-complete"]').filter({ hasText: `${TREE}@${seq}` }).waitFor({ timeout: 15_000 })
    await expect(page.locator('#feed tr[data-event="sync-started"]').filter({ hasText: `${TREE}@${seq}` }).count()).resolves.toBe(1)
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-complete.png'), fullPage: true })
    process.stdout.write(`dashboard: first render ${firstRenderMs} ms; screenshots in ${ARTIFACTS}\n`)
    expect(errors).toEqual([])
    await page.close()
  })

  it('/metrics byte counters match what the sync moved', async () => {
    const seq = await publishOnce()
    for (const lab of [labA, labB]) await cliOk(['sync', '--home', lab.home, TREE, '--seq', String(seq), '--timeout', '120'], { timeoutMs: 130_000 })
    const treeChunkBytes = await uniqueChunkBytes(source)

    const scraped = new Map<string, Sample[]>()
    const statuses = new Map<string, AgentStatus>()
    for (const site of cluster.sites) {
      const res = await fetch(new URL('/metrics', await dashboardUrl(site)))
      expect(res.headers.get('content-type')).toMatch(/^text\/plain/)
      scraped.set(site.name, parseMetrics(await res.text()))
      statuses.set(site.name, await cluster.status(site))
    }
    const m = (site: Site): Sample[] => scraped.get(site.name) as Sample[]
    for (const lab of [labA, labB]) {
      // every byte of file chunks the tree lacked came over the network, once
      expect(value(m(lab), 'deltamesh_tree_chunk_received_bytes_total', { tree: TREE })).toBe(treeChunkBytes)
      // per-peer counters are the agent's own: the same figures as `status`
      const status = statuses.get(lab.name) as AgentStatus
      expect(sum(m(lab), 'deltamesh_peer_chunk_received_bytes_total')).toBe(status.counters.chunkBytesDown)
      expect(sum(m(lab), 'deltamesh_peer_received_bytes_total')).toBe(status.counters.bytesDown)
      // all of it plus the manifest: chunk payload ≥ the tree's, frames ≥ payload, and not much more
      expect(sum(m(lab), 'deltamesh_peer_chunk_received_bytes_total')).toBeGreaterThanOrEqual(treeChunkBytes)
      expect(sum(m(lab), 'deltamesh_peer_received_bytes_total')).toBeLessThanOrEqual(1.1 * treeChunkBytes)
      expect(value(m(lab), 'deltamesh_sync_duration_seconds_count', { tree: TREE })).toBe(1)
      expect(value(m(lab), 'deltamesh_syncs_total', { tree: TREE, outcome: 'complete' })).toBe(1)
      expect(value(m(lab), 'deltamesh_tree_versions_behind', { tree: TREE })).toBe(0)
      expect(value(m(lab), 'deltamesh_network_sites', { state: 'ok' })).toBe(3)
    }
    // payload is conserved across the network: what the three sites served is what the two labs received
    const served = cluster.sites.reduce((n, s) => n + sum(m(s), 'deltamesh_peer_chunk_sent_bytes_total'), 0)
    const received = cluster.sites.reduce((n, s) => n + sum(m(s), 'deltamesh_peer_chunk_received_bytes_total'), 0)
    expect(served).toBe(received)
    // the capped lab's limit is exported; the others are unlimited
    expect(value(m(labA), 'deltamesh_link_limit_bytes_per_second', { link: 'global', direction: 'down' })).toBe(4e6)
    expect(value(m(labB), 'deltamesh_link_limit_bytes_per_second', { link: 'global', direction: 'down' })).toBe(Infinity)
    // and every site sees each site's version of the tree
    for (const site of cluster.sites) {
      for (const other of ['origin', 'lab-a', 'lab-b']) expect(value(m(site), 'deltamesh_network_site_tree_current_seq', { site: other, tree: TREE })).toBe(seq)
    }
  })
})

interface Sample { name: string, labels: Record<string, string>, value: number }

/** The Prometheus text format, as much of it as prom-client writes (no timestamps). */
function parseMetrics (text: string): Sample[] {
  const out: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m === null) throw new Error(`unparsable metrics line: ${line}`)
    const labels: Record<string, string> = {}
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1] as string] = (l[2] as string).replace(/\\(.)/g, '$1')
    const raw = m[3] as string
    out.push({ name: m[1] as string, labels, value: raw === '+Inf' ? Infinity : raw === '-Inf' ? -Infinity : Number(raw) })
  }
  return out
}

function matching (samples: Sample[], name: string, labels: Record<string, string>): Sample[] {
  return samples.filter(s => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
}

function value (samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = matching(samples, name, labels)
  if (found.length !== 1) throw new Error(`${name}${JSON.stringify(labels)}: ${found.length} samples`)
  return (found[0] as Sample).value
}

function sum (samples: Sample[], name: string): number {
  const found = matching(samples, name, {})
  if (found.length === 0) throw new Error(`no ${name}`)
  return found.reduce((n, s) => n + s.value, 0)
}

/** Bytes of the distinct file chunks of a tree, from `deltamesh manifest --entries` (independent of any agent). */
async function uniqueChunkBytes (dir: string): Promise<number> {
  return [...(await chunkSet(dir)).values()].reduce((a, b) => a + b, 0)
}
