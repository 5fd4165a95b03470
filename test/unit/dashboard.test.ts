import { readFile } from 'node:fs/promises'
import { request } from 'node:http'
import { createServer } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { startDashboardServer, parseListen, type DashboardServer } from '../../agent/dashboard/server.js'
import type { DashboardSnapshot } from '../../agent/dashboard/snapshot.js'
import { AgentMetrics } from '../../agent/metrics/metrics.js'
import { parseConfig, defaultConfigText, ConfigError } from '../../agent/core/config.js'
import { silentLogger } from '../../agent/core/log.js'
import type { AgentStatus } from '../../agent/api/api.js'

const SNAPSHOT = { generatedAtMs: 1, self: { name: 'lab' }, sites: [] } as unknown as DashboardSnapshot

let server: DashboardServer | undefined
afterEach(async () => { await server?.close(); server = undefined })

async function start (allowedHosts?: string[]): Promise<DashboardServer> {
  server = await startDashboardServer({
    log: silentLogger(),
    snapshot: async () => SNAPSHOT,
    metrics: async () => ({ contentType: 'text/plain; version=0.0.4', body: 'deltamesh_x 1\n' }),
  }, { listen: '127.0.0.1:0', allowedHosts })
  return server
}

interface Reply { status: number, headers: Record<string, string | string[] | undefined>, body: string }

async function get (url: string, options: { method?: string, host?: string, firstChunkOnly?: boolean } = {}): Promise<Reply> {
  return await new Promise((resolve, reject) => {
    const u = new URL(url)
    const req = request({ host: u.hostname, port: u.port, path: u.pathname, method: options.method ?? 'GET', headers: options.host === undefined ? {} : { host: options.host } }, res => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => {
        body += d
        // an event stream never ends: stop after the first event
        if (options.firstChunkOnly === true && body.includes('event:') && body.includes('\n\n', body.indexOf('event:'))) { req.destroy(); resolve({ status: res.statusCode ?? 0, headers: res.headers, body }) }
      })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
    })
    req.on('error', err => { if (!req.destroyed) reject(err) })
    req.end()
  })
}

describe('dashboard server', () => {
  it('serves the page and its assets with a CSP that allows nothing from elsewhere', async () => {
    const s = await start()
    expect(s.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/)
    const page = await get(s.url)
    expect(page.status).toBe(200)
    expect(page.headers['content-type']).toContain('text/html')
    expect(page.body).toContain('<script src="/app.js"')
    expect(page.headers['content-security-policy']).toContain("default-src 'none'")
    // no absolute URL to another origin anywhere in what the page loads
    for (const path of ['app.js', 'app.css']) {
      const asset = await get(s.url + path)
      expect(asset.status).toBe(200)
      expect(asset.body).not.toMatch(/https?:\/\/(?!www\.w3\.org\/2000\/svg)/)
    }
  })

  it('serves the snapshot as JSON and as server-sent events, and /metrics', async () => {
    const s = await start()
    expect(JSON.parse((await get(s.url + 'api/snapshot')).body)).toEqual(SNAPSHOT)
    const events = await get(s.url + 'api/events', { firstChunkOnly: true })
    expect(events.headers['content-type']).toBe('text/event-stream')
    expect(events.body).toContain(`event: snapshot\ndata: ${JSON.stringify(SNAPSHOT)}\n\n`)
    const metrics = await get(s.url + 'metrics')
    expect(metrics.body).toBe('deltamesh_x 1\n')
  })

  it('answers through a tunnel or a local forward on another port, and a configured proxy name; says what it expected', async () => {
    const s = await start(['mirror.example.org', 'proxy.lan:8443'])
    // ssh -L 9999:127.0.0.1:<port> arrives with the tunnel's port in Host (the case issue 24 reported as 421)
    for (const host of ['127.0.0.1:9999', 'localhost:7180', '[::1]:1', 'localhost', 'mirror.example.org', 'mirror.example.org:443', 'proxy.lan:8443']) {
      expect((await get(s.url + 'metrics', { host })).status, host).toBe(200)
    }
    const refused = await get(s.url, { host: 'proxy.lan:80' })
    expect(refused.status).toBe(421)
    expect(refused.body).toMatch(/loopback names .* on any port.*mirror\.example\.org.*not to Host "proxy\.lan:80".*allowedHosts/)
    expect((await get(s.url, { host: 'localhost.attacker.example' })).status).toBe(421)
  })

  it('refuses requests for another Host (DNS rebinding), other methods and unknown paths', async () => {
    const s = await start()
    expect((await get(s.url, { host: 'attacker.example:80' })).status).toBe(421)
    expect((await get(s.url, { host: `localhost:${new URL(s.url).port}` })).status).toBe(200)
    expect((await get(s.url + 'api/snapshot', { method: 'POST' })).status).toBe(405)
    expect((await get(s.url + '../../etc/passwd')).status).toBe(404)
    expect((await get(s.url + 'index.ts')).status).toBe(404)
  })

  it('fails to start with DashboardListenError naming the address when the port is taken', async () => {
    const blocker = createServer()
    await new Promise<void>(resolve => blocker.listen(0, '127.0.0.1', resolve))
    const port = (blocker.address() as { port: number }).port
    try {
      await expect(startDashboardServer({ log: silentLogger(), snapshot: async () => SNAPSHOT, metrics: async () => ({ contentType: 'text/plain', body: '' }) }, { listen: `127.0.0.1:${port}` }))
        .rejects.toMatchObject({ name: 'DashboardListenError', listen: `127.0.0.1:${port}` })
    } finally {
      blocker.close()
    }
    expect(parseListen('[::1]:80')).toEqual({ host: '::1', port: 80 })
    expect(() => parseListen('example.com:80')).toThrow(expect.objectContaining({ name: 'DashboardListenError' }))
  })
})

describe('[dashboard] config', () => {
  it('defaults to 127.0.0.1:7180, on; init writes the section', () => {
    const c = parseConfig(defaultConfigText(['/ip4/127.0.0.1/tcp/4101']), 'config.toml')
    expect(c.dashboard).toEqual({ enabled: true, listen: '127.0.0.1:7180', statusIntervalMs: 5000, allowedHosts: [] })
    expect(parseConfig('', 'c.toml').dashboard.listen).toBe('127.0.0.1:7180')
  })

  it('the example config in docs/deploy loads', async () => {
    const file = new URL('../../docs/deploy/config.example.toml', import.meta.url)
    const c = parseConfig(await readFile(file, 'utf8'), file.pathname)
    expect(c.agent.name).toBe('brisbane-lab')
    expect(c.peers).toHaveLength(2)
    expect(c.dashboard.listen).toBe('127.0.0.1:7180')
  })

  it.each([
    ['[dashboard]\nlisten = "7180"', 'dashboard.listen', /HOST:PORT/],
    ['[dashboard]\nlisten = "127.0.0.1:70000"', 'dashboard.listen', /65535/],
    ['[dashboard]\nenabled = "yes"', 'dashboard.enabled', /boolean/],
    ['[dashboard]\nstatusIntervalMs = 10', 'dashboard.statusIntervalMs', /250/],
    ['[dashboard]\nport = 1', 'dashboard', /unknown key.*port/],
  ])('%s → ConfigError at %s', (text, key, expected) => {
    try {
      parseConfig(text, '/etc/deltamesh/config.toml')
      expect.unreachable()
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError)
      expect((err as ConfigError).key).toBe(key)
      expect((err as ConfigError).file).toBe('/etc/deltamesh/config.toml')
      expect((err as ConfigError).expected).toMatch(expected)
    }
  })
})

describe('AgentMetrics', () => {
  it('exports the status counters per peer, limits (+Inf when unlimited), sync outcomes and per-tree bytes', async () => {
    const status: AgentStatus = {
      peerId: 'P', multiaddrs: [], publisherKey: 'k', version: '0.1.0', startedAtMs: 2000,
      trees: [{ name: 'a/b', currentSeq: 3, newestSeq: 5, subscribedTo: '/m', trustedKeys: [], versions: [], sync: { tree: 'a/b', seq: 5, phase: 'fetching', bytesTotal: 100, bytesDone: 40, chunksTotal: 2, chunksDone: 1, bytesLocal: 0, rateBps: 1, startedAtMs: 0, sources: 1 } }],
      peers: [{ peerId: 'Q', name: 'origin', connected: true, bytesUp: 11, bytesDown: 2200, chunkBytesUp: 0, chunkBytesDown: 2048, chunksUp: 0, chunksDown: 2, badChunks: 1, strikes: 1 }],
      links: [],
      treeWeights: {},
      counters: { envelopesRejected: 4, chunksRejected: 1, bytesUp: 11, bytesDown: 2200, chunkBytesUp: 0, chunkBytesDown: 2048 },
    }
    const m = new AgentMetrics()
    m.chunkReceived('a/b', 1024)
    m.chunkReceived('a/b', 1024)
    m.syncEnded('a/b', { result: { tree: 'a/b', seq: 3, bytesFetched: 2048, durationMs: 2500 } })
    m.syncEnded('a/b', { error: new Error('x') })
    m.statusMessage('replayed')
    m.setSnapshot({ status, siteName: 'lab', sites: [], peerRates: () => ({ up: 5, down: 7 }), links: [{ name: 'global', peers: 1, limitDown: 4e6, rateUp: 1, rateDown: 2 }] })
    const text = await m.registry.metrics()
    for (const line of [
      'deltamesh_info{version="0.1.0",peer_id="P",site="lab"} 1',
      'deltamesh_peer_received_bytes_total{peer="Q",site="origin"} 2200',
      'deltamesh_peer_chunk_received_bytes_total{peer="Q",site="origin"} 2048',
      'deltamesh_peer_verification_failures_total{peer="Q",site="origin"} 1',
      'deltamesh_peer_rate_bytes_per_second{peer="Q",site="origin",direction="down"} 7',
      'deltamesh_link_limit_bytes_per_second{link="global",direction="up"} +Inf',
      'deltamesh_link_limit_bytes_per_second{link="global",direction="down"} 4000000',
      'deltamesh_envelopes_rejected_total 4',
      'deltamesh_tree_chunk_received_bytes_total{tree="a/b"} 2048',
      'deltamesh_tree_versions_behind{tree="a/b"} 2',
      'deltamesh_tree_sync_bytes_done{tree="a/b"} 40',
      'deltamesh_sync_duration_seconds_sum{tree="a/b"} 2.5',
      'deltamesh_syncs_total{tree="a/b",outcome="failed"} 1',
      'deltamesh_status_messages_total{result="replayed"} 1',
    ]) expect(text.split('\n')).toContain(line)
  })
})
