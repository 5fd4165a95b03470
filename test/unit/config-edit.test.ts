import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { appendPeer, appendTrust, loadConfig, removePeerEntry, writeDefaultConfig } from '../../agent/core/config.js'
import { editConfig } from '../../agent/demo/config-edit.js'

const PEER = '/ip4/127.0.0.1/tcp/4102/p2p/12D3KooWGzh3ZNs4H3hoN3ykHmV3Cb7ST6XpVXSeJ4fbD9ZfWtk2'

let dir: string | undefined
afterEach(async () => { if (dir !== undefined) await rm(dir, { recursive: true, force: true }) })

async function freshConfig (): Promise<string> {
  dir = await mkdtemp(join(tmpdir(), 'deltamesh-config-edit-'))
  const file = join(dir, 'config.toml')
  await writeDefaultConfig(file, ['/ip4/127.0.0.1/tcp/4101'])
  return file
}

describe('editConfig', () => {
  it('merges tables key by key and replaces arrays; the result loads as the agent would load it', async () => {
    const file = await freshConfig()
    await appendPeer(file, PEER, 'lab')
    await editConfig(file, { agent: { name: 'origin', banSeconds: 20 }, limits: { up: '2MB/s' }, links: [{ name: 'labs', peers: ['lab'], up: '10MB/s' }] })
    const config = await loadConfig(file)
    expect(config.agent).toMatchObject({ name: 'origin', banSeconds: 20, listen: ['/ip4/127.0.0.1/tcp/4101'] })
    expect(config.limits).toMatchObject({ up: '2MB/s', down: 'unlimited' })
    expect(config.links).toMatchObject([{ name: 'labs', peers: ['lab'], up: '10MB/s' }])
    expect(config.peers).toEqual([{ addr: PEER, name: 'lab' }])
    expect(config.dashboard.statusIntervalMs).toBe(5000)
  })

  it('leaves the file as it was when the result is not a valid config', async () => {
    const file = await freshConfig()
    const before = await readFile(file, 'utf8')
    await expect(editConfig(file, { limits: { up: 'fast' } })).rejects.toHaveProperty('name', 'ConfigError')
    await expect(editConfig(file, { mirror: { mode: 'group' } })).rejects.toHaveProperty('name', 'ConfigError')
    expect(await readFile(file, 'utf8')).toBe(before)
  })

  it('keeps the file appendable by `peers add` and `trust`', async () => {
    const file = await freshConfig()
    await appendPeer(file, PEER, 'lab')
    await editConfig(file, { dashboard: { statusIntervalMs: 500 } })
    await appendPeer(file, PEER.replace('4102', '4103'), 'lab-2')
    const config = await loadConfig(file)
    expect(config.peers.map(p => p.name)).toEqual(['lab', 'lab-2'])
    expect(config.dashboard.statusIntervalMs).toBe(500)
  })
})

describe('removePeerEntry (peers remove)', () => {
  it('takes out exactly that [[peers]] table; comments and the other tables stay', async () => {
    const file = await freshConfig()
    const other = PEER.replace('4102', '4103').replace('Wtk2', 'Wtk3')
    await appendPeer(file, PEER, 'lab')
    await appendTrust(file, 'a/b', 'ed25519:' + 'A'.repeat(43))
    await appendPeer(file, other)
    const before = await readFile(file, 'utf8')
    await removePeerEntry(file, PEER)
    const after = await readFile(file, 'utf8')
    expect(after).toBe(before.replace(`\n[[peers]]\naddr = "${PEER}"\nname = "lab"\n`, ''))
    const config = await loadConfig(file)
    expect(config.peers).toEqual([{ addr: other }])
    expect(config.trust).toHaveLength(1)
  })

  it('refuses (and writes nothing) when no plain [[peers]] table has that address', async () => {
    const file = await freshConfig()
    await appendPeer(file, PEER, 'lab')
    const before = await readFile(file, 'utf8')
    await expect(removePeerEntry(file, PEER.replace('4102', '9999'))).rejects.toHaveProperty('name', 'ConfigError')
    expect(await readFile(file, 'utf8')).toBe(before)
  })
})
