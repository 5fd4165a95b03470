import { spawn } from 'node:child_process'
import { request } from 'node:http'
import { mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { startControlServer, type ControlServer } from '../../agent/control/server.js'
import { ControlClient, connectAgent } from '../../agent/control/client.js'
import { HomeLayout } from '../../agent/core/home.js'
import { silentLogger } from '../../agent/core/log.js'
import { InvalidTreeNameError } from '../../protocol/errors.js'
import { httpStatusOf } from '../../agent/control/errors.js'
import { FilterPatternError } from '../../agent/versions/filter.js'
import { createProgressReporter, formatProgressLine } from '../../agent/commands/progress.js'
import { parseRate } from '../../agent/core/rate.js'
import type { AcceptResult, DiffOptions, DiffRequest, DiffSummary, EventsOptions, AgentApi, AgentStatus, LimitRequest, LinkStatus, PublishRequest, PublishSummary, SubscribeRequest, SyncProgress, SyncResult, VerifySummary } from '../../agent/api/api.js'

const STATUS: AgentStatus = {
  peerId: '12D3KooWtest', multiaddrs: ['/ip4/127.0.0.1/tcp/4101'], publisherKey: 'ed25519:abc', version: '0.1.0', startedAtMs: 1,
  trees: [{ name: 'a/b', currentSeq: 4, newestSeq: 5, trustedKeys: ['ed25519:abc'], versions: [] }],
  peers: [{ peerId: '12D3KooWpeer', connected: true, bytesUp: 10, bytesDown: 20, chunkBytesUp: 8, chunkBytesDown: 16, chunksUp: 1, chunksDown: 2, badChunks: 0, strikes: 0 }],
  links: [],
  treeWeights: {},
  counters: { envelopesRejected: 0, chunksRejected: 0, bytesUp: 10, bytesDown: 20, chunkBytesUp: 8, chunkBytesDown: 16 },
}

const progress = (bytesDone: number): SyncProgress => ({
  tree: 'a/b', seq: 5, phase: 'fetching', bytesTotal: 100, bytesDone, chunksTotal: 10, chunksDone: bytesDone / 10,
  bytesLocal: 0, rateBps: 50, startedAtMs: 1, sources: 1,
})

/** An AgentApi whose behaviour each test sets; it records what it was called with. */
class FakeApi implements AgentApi {
  calls: Array<[string, unknown]> = []
  syncSignal: AbortSignal | undefined
  syncImpl: (options: { signal?: AbortSignal, onProgress?: (p: SyncProgress) => void }) => Promise<SyncResult> = async () => ({ tree: 'a/b', seq: 5, bytesFetched: 0, durationMs: 0 })
  async status (): Promise<AgentStatus> { return STATUS }
  async publish (request: PublishRequest, _signal?: AbortSignal): Promise<PublishSummary> {
    this.calls.push(['publish', request])
    return { tree: request.tree, seq: 1, label: request.label ?? '', root: 'ff', files: 1, bytes: 2, chunks: 1, newChunks: 1, newBytes: 2, cachedFiles: 0, manifestBytes: 10, durationMs: 3 }
  }

  async subscribe (request: SubscribeRequest): Promise<void> { this.calls.push(['subscribe', request]) }
  async unsubscribe (tree: string): Promise<void> { this.calls.push(['unsubscribe', tree]) }
  async addPeer (addr: string, name?: string): Promise<void> { this.calls.push(['addPeer', { addr, name }]) }
  async removePeer (peer: string): Promise<{ peerId: string, addr: string }> { this.calls.push(['removePeer', peer]); return { peerId: peer, addr: `/ip4/1.2.3.4/tcp/1/p2p/${peer}` } }
  async trust (tree: string): Promise<void> { throw new InvalidTreeNameError(tree, 'segment is empty') }
  async verify (tree: string, options: { seq?: number } = {}): Promise<VerifySummary> { return { tree, seq: options.seq ?? 0, path: '/x', files: 0, bytes: 0, problems: [] } }
  async setLimit (request: LimitRequest): Promise<LinkStatus> {
    this.calls.push(['setLimit', request])
    if (request.up !== undefined) parseRate(request.up)
    return { name: request.link ?? 'global', kind: 'link', peers: [], limit: { up: 1e7, down: null }, configured: { up: null, down: null }, schedule: [], rate: { up: 0, down: 0 }, queue: [] }
  }

  async setTreeWeight (tree: string, weight?: number): Promise<number> { this.calls.push(['setTreeWeight', { tree, weight }]); return weight ?? 1 }
  async waitForSync (_tree: string, options: { signal?: AbortSignal, onProgress?: (p: SyncProgress) => void }): Promise<SyncResult> {
    this.syncSignal = options.signal
    return await this.syncImpl(options)
  }

  async shutdown (): Promise<void> { this.calls.push(['shutdown', undefined]) }
  async diff (request: DiffRequest, options: DiffOptions): Promise<DiffSummary> {
    this.calls.push(['diff', request])
    await options.onChange({ change: 'added', path: 'a', type: 'file' })
    return { tree: request.tree, from: request.from, to: request.to ?? 2, counts: { added: 1, removed: 0, changed: 0, 'mode-changed': 0 } }
  }

  async accept (tree: string, seq: number): Promise<AcceptResult> { this.calls.push(['accept', { tree, seq }]); return { tree, seq } }
  async events (options: EventsOptions): Promise<void> {
    options.onEvent({ id: 1, type: 'following', time: new Date(0).toISOString(), timeMs: 0 })
    await new Promise<void>(resolve => { options.signal?.addEventListener('abort', () => { resolve() }) })
  }
}

/** A raw request, so that the tests can send what the client never would. */
async function raw (socketPath: string, method: string, path: string, body?: string | Buffer): Promise<{ status: number, json: any }> {
  return await new Promise((resolve, reject) => {
    const req = request({ socketPath, method, path, agent: false }, (res) => {
      const parts: Buffer[] = []
      res.on('data', (c: Buffer) => parts.push(c))
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(parts).toString('utf8')) }) })
    })
    req.on('error', reject)
    req.end(body)
  })
}

describe('control API over a unix socket', () => {
  let dir: string
  let socketPath: string
  let api: FakeApi
  let server: ControlServer | undefined
  let client: ControlClient

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dm-control-'))
    socketPath = join(dir, 'control.sock')
    api = new FakeApi()
    server = await startControlServer({ socketPath, api, log: silentLogger() })
    client = new ControlClient(socketPath, { callTimeoutMs: 5_000 })
  })

  afterEach(async () => {
    await server?.close()
    await rm(dir, { recursive: true, force: true })
  })

  it('round-trips status, and creates the socket with mode 0600', async () => {
    expect(await client.status()).toEqual(STATUS)
    expect((await stat(socketPath)).mode & 0o777).toBe(0o600)
  })

  it('sends absolute paths and validated requests to the api', async () => {
    await client.subscribe({ tree: 'a/b', to: 'rel/dir', include: ['*.rpm'] })
    const summary = await client.publish({ tree: 'a/b', source: '/src', label: 'L' })
    expect(summary.label).toBe('L')
    await client.addPeer('/ip4/1.2.3.4/tcp/1/p2p/x', 'site-b')
    expect(api.calls[0]).toEqual(['subscribe', { tree: 'a/b', to: join(process.cwd(), 'rel/dir'), include: ['*.rpm'] }])
    expect(api.calls[1]).toEqual(['publish', { tree: 'a/b', source: '/src', label: 'L', strict: false, force: false }])
    expect(api.calls[2]).toEqual(['addPeer', { addr: '/ip4/1.2.3.4/tcp/1/p2p/x', name: 'site-b' }])
  })

  it('carries --allow-empty and --max-drop, refuses a share out of range, and maps a refused pattern to 400', async () => {
    await client.subscribe({ tree: 'a/b', to: '/m', include: ['Packages/x86_64/'], allowEmpty: true, maxDropPercent: 80 })
    expect(api.calls[0]).toEqual(['subscribe', { tree: 'a/b', to: '/m', include: ['Packages/x86_64/'], allowEmpty: true, maxDropPercent: 80 }])
    const out = await raw(socketPath, 'POST', '/v1/subscribe', JSON.stringify({ tree: 'a/b', to: '/m', maxDropPercent: 150 }))
    expect(out.status).toBe(400)
    expect(out.json.error.message).toMatch(/maxDropPercent/)
    expect(httpStatusOf(new FilterPatternError('include', '', 'empty pattern', 'drop it'))).toBe(400)
  })

  it('carries limit and weight changes, and refuses a rate that is not one with 400', async () => {
    const link = await client.setLimit({ link: 'wan', up: '10MB/s' })
    expect(link.limit.up).toBe(1e7)
    expect(link.limit.down).toBeNull()
    expect(await client.setTreeWeight('a/b', 4)).toBe(4)
    expect(await client.setTreeWeight('a/b')).toBe(1)
    expect(api.calls).toEqual([['setLimit', { link: 'wan', up: '10MB/s' }], ['setTreeWeight', { tree: 'a/b', weight: 4 }], ['setTreeWeight', { tree: 'a/b', weight: undefined }]])
    const err = await client.setLimit({ up: 'fast' }).catch((e: unknown) => e as Error)
    expect(err).toHaveProperty('name', 'RateParseError')
    const bad = await raw(socketPath, 'POST', '/v1/limit', JSON.stringify({ reset: 'yes' }))
    expect(bad.status).toBe(400)
  })

  it('carries the gate and post-version commands, a diff as it streams, accept, and the event stream until the reader stops', async () => {
    await client.subscribe({ tree: 'a/b', to: '/m', gate: ['/bin/check', 'two words'], gateTimeoutMs: 5000, onVersion: ['/bin/notify'] })
    expect(api.calls[0]).toEqual(['subscribe', { tree: 'a/b', to: '/m', gate: ['/bin/check', 'two words'], gateTimeoutMs: 5000, onVersion: ['/bin/notify'] }])
    expect((await raw(socketPath, 'POST', '/v1/subscribe', JSON.stringify({ tree: 'a/b', to: '/m', gate: 'sh -c x' }))).status).toBe(400)
    const changes: unknown[] = []
    const summary = await client.diff({ tree: 'a/b', from: 1 }, { onChange: c => { changes.push(c) } })
    expect(changes).toEqual([{ change: 'added', path: 'a', type: 'file' }])
    expect(summary).toEqual({ tree: 'a/b', from: 1, to: 2, counts: { added: 1, removed: 0, changed: 0, 'mode-changed': 0 } })
    expect(await client.accept('a/b', 7)).toEqual({ tree: 'a/b', seq: 7 })
    expect((await raw(socketPath, 'POST', '/v1/accept', JSON.stringify({ tree: 'a/b' }))).status).toBe(400)
    const stop = new AbortController()
    const seen: string[] = []
    await client.events({ signal: stop.signal, onEvent: e => { seen.push(e.type); stop.abort() } })
    expect(seen).toEqual(['following'])
  })

  it('keeps the name of a typed error across the socket', async () => {
    const err = await client.trust('a//b', 'ed25519:abc').catch((e: unknown) => e as Error)
    expect(err).toBeInstanceOf(Error)
    expect(err).toHaveProperty('name', 'InvalidTreeNameError')
    expect((err as Error).message).toContain('segment is empty')
  })

  it('streams progress events, at most one per PROGRESS_LINE_MS but every phase change and the last, then the result', async () => {
    api.syncImpl = async ({ onProgress }) => {
      for (const done of [10, 50, 60]) { onProgress?.(progress(done)); await new Promise(resolve => setTimeout(resolve, 5)) }
      onProgress?.({ ...progress(70), phase: 'finalizing' })
      await new Promise(resolve => setTimeout(resolve, 5))
      onProgress?.({ ...progress(100), phase: 'finalizing' })
      return { tree: 'a/b', seq: 5, bytesFetched: 100, durationMs: 2 }
    }
    const seen: number[] = []
    const result = await client.waitForSync('a/b', { onProgress: p => seen.push(p.bytesDone) })
    expect(seen).toEqual([10, 70, 100])
    expect(result).toEqual({ tree: 'a/b', seq: 5, bytesFetched: 100, durationMs: 2 })
  })

  it('reports a failed sync with its error name', async () => {
    api.syncImpl = async () => { throw Object.assign(new Error('no peer has chunk 1234'), { name: 'ChunkUnavailableError' }) }
    await expect(client.waitForSync('a/b', {})).rejects.toMatchObject({ name: 'ChunkUnavailableError', message: 'no peer has chunk 1234' })
  })

  it('aborts the server-side waitForSync when the client goes away', async () => {
    let serverAborted!: () => void
    const aborted = new Promise<void>(resolve => { serverAborted = resolve })
    api.syncImpl = async ({ signal, onProgress }) => {
      onProgress?.(progress(10))
      return await new Promise((_resolve, reject) => {
        signal?.addEventListener('abort', () => { serverAborted(); reject(signal.reason) }, { once: true })
      })
    }
    const controller = new AbortController()
    const waiting = client.waitForSync('a/b', { signal: controller.signal, onProgress: () => { controller.abort(new Error('user gave up')) } })
    await expect(waiting).rejects.toThrow('user gave up')
    await aborted
    expect(api.syncSignal?.aborted).toBe(true)
  })

  it('aborts a publish when the client goes away, with no server-side timeout', async () => {
    let publishSignal: AbortSignal | undefined
    api.publish = async (_request, signal) => {
      publishSignal = signal
      return await new Promise((_resolve, reject) => { signal?.addEventListener('abort', () => { reject(signal.reason) }) })
    }
    const controller = new AbortController()
    const publishing = client.publish({ tree: 'a/b', source: '/src' }, controller.signal).then(() => undefined, (err: unknown) => err as Error)
    await new Promise(resolve => setTimeout(resolve, 50))
    expect(publishSignal?.aborted).toBe(false)
    controller.abort(new Error('ctrl-c'))
    expect((await publishing)?.message).toBe('ctrl-c')
    await expect.poll(() => publishSignal?.aborted).toBe(true)
  })

  it('refuses malformed, mistyped and oversized bodies with a clear message', async () => {
    const bad = await raw(socketPath, 'POST', '/v1/subscribe', '{not json')
    expect(bad.status).toBe(400)
    expect(bad.json.error.name).toBe('BadRequestError')
    expect(bad.json.error.message).toMatch(/not valid JSON/)

    const mistyped = await raw(socketPath, 'POST', '/v1/subscribe', JSON.stringify({ tree: 'a/b', to: '/x', include: [1] }))
    expect(mistyped.status).toBe(400)
    expect(mistyped.json.error.message).toBe('include: expected an array of strings')

    const relative = await raw(socketPath, 'POST', '/v1/publish', JSON.stringify({ tree: 'a/b', source: 'src' }))
    expect(relative.status).toBe(400)
    expect(relative.json.error.message).toMatch(/absolute path/)

    const huge = await raw(socketPath, 'POST', '/v1/publish', Buffer.alloc(2 * 1024 * 1024, 0x20))
    expect(huge.status).toBe(413)
    expect(huge.json.error).toEqual({ name: 'RequestTooLargeError', message: 'request body exceeds 1048576 bytes' })

    const missing = await raw(socketPath, 'GET', '/v1/sync')
    expect(missing.status).toBe(400)
    expect(missing.json.error.message).toBe('query parameter tree is required')

    const unknown = await raw(socketPath, 'GET', '/v1/nope')
    expect(unknown.status).toBe(404)
    expect(api.calls).toEqual([])
  })

  it('refuses a second server on the same socket while the first runs', async () => {
    await expect(startControlServer({ socketPath, api, log: silentLogger() }))
      .rejects.toMatchObject({ name: 'AgentRunningError', message: expect.stringContaining(`already running (pid ${process.pid})`) })
    expect(await client.status()).toEqual(STATUS) // the first one is untouched
  })

  it('replaces a stale socket file nobody listens on', async () => {
    await server?.close()
    server = undefined
    const stale = join(dir, 'stale.sock')
    // A process that binds the socket and dies without unlinking it, as a crashed agent would.
    await new Promise<void>((resolve, reject) => {
      const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, 'SIGKILL'))`])
      child.on('error', reject)
      child.on('exit', () => { resolve() })
    })
    expect((await stat(stale)).isSocket()).toBe(true)
    const home = new HomeLayout(dir)
    expect(await connectAgent(home)).toBeUndefined() // no socket at HOME/control.sock at all
    server = await startControlServer({ socketPath: stale, api, log: silentLogger() })
    expect(await new ControlClient(stale).status()).toEqual(STATUS)
  })

  it('answers shutdown before calling the shutdown callback', async () => {
    await server?.close()
    let called = false
    server = await startControlServer({ socketPath, api, log: silentLogger(), onShutdown: () => { called = true } })
    await client.shutdown()
    await new Promise(resolve => setImmediate(resolve))
    expect(called).toBe(true)
    expect(api.calls).toEqual([]) // the callback replaces api.shutdown()
  })

  it('close() ends open sync streams, and connectAgent then finds no agent', async () => {
    api.syncImpl = async ({ signal }) => await new Promise((_resolve, reject) => { signal?.addEventListener('abort', () => { reject(signal.reason) }) })
    const waiting = client.waitForSync('a/b', { onProgress: () => {} }).then(() => new Error('resolved'), (err: unknown) => err as Error)
    await new Promise(resolve => setTimeout(resolve, 20))
    await server?.close()
    server = undefined
    expect((await waiting).message).toMatch(/closed the sync stream/)
    expect(api.syncSignal?.aborted).toBe(true)
    expect(await connectAgent(new HomeLayout(dir))).toBeUndefined()
  })
})

describe('sync progress output', () => {
  it('formats a plain progress line', () => {
    const p: SyncProgress = { ...progress(0), bytesTotal: 120 * 1024 * 1024, bytesDone: 41.2 * 1024 * 1024, chunksTotal: 2300, chunksDone: 812, rateBps: 18_300_000, sources: 0 }
    // sizes in binary units, rates in decimal bytes per second as limits are written (README: Units)
    expect(formatProgressLine(p)).toBe('sync a/b@5: 41.2 MiB / 120.0 MiB (34%), 812/2300 chunks, 18MB/s, ETA 5 s')
  })

  it('says why a sync waits: the progress line, and the waiting line when no sync runs', () => {
    const stuck = { reason: 'no-source' as const, message: 'no peer holds 3 chunks (150 KiB) of a/b@5: …', sinceMs: 1 }
    expect(formatProgressLine({ ...progress(10), stuck })).toMatch(/ETA .*; waiting: no peer holds 3 chunks \(150 KiB\) of a\/b@5: …$/)
    expect(formatProgressLine({ ...progress(0), phase: 'waiting', stuck: { ...stuck, message: 'version 5 announced by x refused: untrusted-key' } }))
      .toBe('sync a/b: waiting: version 5 announced by x refused: untrusted-key')
    expect(formatProgressLine({ ...progress(0), phase: 'waiting' })).toBe('sync a/b: waiting for a trusted version to be announced')
  })

  it('prints at most one line per interval when not on a terminal, and a line at each phase change', () => {
    const lines: string[] = []
    let now = 0
    const stream = { write: (s: string) => { lines.push(s); return true } } as unknown as NodeJS.WriteStream
    const reporter = createProgressReporter({ stream, tty: false, intervalMs: 2000, now: () => now })
    for (let t = 0; t <= 5000; t += 250) { now = t; reporter.update(progress(Math.min(100, t / 50))) }
    now = 5100
    reporter.update({ ...progress(100), phase: 'finalizing' })
    expect(lines.length).toBe(4) // t=0, 2000, 4000, then the phase change
    expect(lines[3]).toContain('(finalizing)')
    expect(reporter.last?.phase).toBe('finalizing')
  })
})
