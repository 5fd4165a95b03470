import { readFile } from 'node:fs/promises'
import { describe, expect, it } from 'vitest'
import { cliOk, runCli, waitFor } from '../../agent/demo/local-cluster.js'
import { HomeLayout } from '../../agent/core/home.js'
import type { LinkStatus, PeerStatus } from '../../agent/api/api.js'
import { clusterPerTest } from '../helpers/cluster.js'

// The admin's commands of issue 24 against running agents: peers remove (and `peers --home`), limit --peer by
// name, limit's schedules in --json.

const clusters = clusterPerTest()

describe('admin commands (real agents)', () => {
  it('peers remove: off config.toml, disconnected and refused at once; unknown peers named; peers --home lists', async () => {
    const c = await clusters.create()
    const origin = await c.addSite('origin')
    const lab = await c.addSite('lab')
    await c.editConfig(origin, { links: [], limits: { schedule: [{ days: 'daily', hours: '00:00-23:59', up: '7MB/s' }] } })
    await c.wire('a/b', origin)
    for (const s of c.sites) await c.start(s)
    const connected = async (): Promise<boolean> => (JSON.parse(await cliOk(['peers', '--home', origin.home, '--json'])) as PeerStatus[]).some(p => p.peerId === lab.peerId && p.connected)
    await waitFor('origin and lab connected', connected, 30_000)

    // limit --peer takes the [[peers]] name; limit --json carries the schedule's rates
    const set = JSON.parse(await cliOk(['limit', '--home', origin.home, '--peer', 'lab', '--up', '3MB/s', '--json'])) as LinkStatus[]
    expect(set[0]).toMatchObject({ kind: 'peer', peers: [lab.peerId], limit: { up: 3e6 } })
    const links = JSON.parse(await cliOk(['limit', '--home', origin.home, '--json'])) as LinkStatus[]
    expect(links.find(l => l.kind === 'global')?.schedule).toEqual([{ window: 'daily 00:00-23:59', up: 7e6 }])
    expect(await cliOk(['limit', '--home', origin.home])).toMatch(/global: daily 00:00-23:59 up 7\.0MB\/s/)

    const unknown = await runCli(['peers', 'remove', '--home', origin.home, 'westford'])
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toContain('UnknownPeerError: no peer "westford" is listed here')
    expect(unknown.stderr).toContain('listed: lab')

    expect(await cliOk(['peers', 'remove', '--home', origin.home, 'lab'])).toContain(`removed peer lab (${lab.peerId})`)
    expect(await readFile(new HomeLayout(origin.home).config, 'utf8')).not.toContain(lab.peerId)
    await waitFor('the lab hung up on', async () => !(await connected()), 15_000)
    // refused both ways from now on: the lab keeps dialling the origin, and gets nowhere
    await new Promise(resolve => setTimeout(resolve, 3000))
    expect(await connected()).toBe(false)
    const peers = JSON.parse(await cliOk(['peers', '--home', origin.home, '--json'])) as PeerStatus[]
    expect(peers.map(p => p.peerId)).not.toContain(lab.peerId)
    // without the agent, `peers --home` lists config.toml's peers
    await c.stop(origin)
    expect(await cliOk(['peers', '--home', origin.home])).toContain('(none)')
  })
})
