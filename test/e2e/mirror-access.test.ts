import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmod, lstat, mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Cluster } from '../../agent/demo/local-cluster.js'
import { HomeLayout } from '../../agent/core/home.js'
import { resolveGroup } from '../../agent/fs/mirror-access.js'
import { treeCommands } from '../helpers/tree-commands.js'

// A mirror is served by another local user (httpd, nginx): real agents, then `nobody` reads through the
// subscribed path — and cannot read the agent's keys, database or config. Needs root (to become nobody).

const TREE = 'lab/mirror'
const { subscribe, publish, syncDone } = treeCommands(TREE)
const NOBODY = 65534
const canSwitchUser = process.getuid?.() === 0

/** Runs `args` as uid/gid nobody with exactly `groups` as supplementary groups; its stdout, or the error text. */
async function asNobody (args: string[], groups: number[] = []): Promise<{ ok: boolean, out: Buffer, err: string }> {
  const who = ['--reuid', String(NOBODY), '--regid', String(NOBODY), ...(groups.length > 0 ? ['--groups', groups.join(',')] : ['--clear-groups'])]
  try {
    const { stdout } = await promisify(execFile)('setpriv', [...who, ...args], { encoding: 'buffer', maxBuffer: 64 << 20 })
    return { ok: true, out: stdout, err: '' }
  } catch (error) {
    return { ok: false, out: Buffer.alloc(0), err: String((error as { stderr?: Buffer }).stderr ?? error) }
  }
}

async function sourceTree (dir: string): Promise<void> {
  await mkdir(join(dir, 'Packages', 'x86_64'), { recursive: true })
  await writeFile(join(dir, 'README'), 'served by nginx\n', { mode: 0o644 })
  await writeFile(join(dir, 'Packages', 'x86_64', 'big.rpm'), randomBytes(300 * 1024), { mode: 0o644 })
  // published private: stays private in the mirror, as with rsync
  await writeFile(join(dir, 'secret'), 'not for the web\n')
  await chmod(join(dir, 'secret'), 0o600)
}

describe.runIf(canSwitchUser)('serving a mirror as another user (real agents)', () => {
  let cluster: Cluster | undefined
  const mirrors = new Map<string, string>()
  let rpm: Buffer
  let worldHome: HomeLayout
  let homeModeAtStart = 0
  let wwwData = 0

  beforeAll(async () => {
    const c = await Cluster.create('deltamesh-e2e-mirror-')
    cluster = c
    // mkdtemp made the cluster dir 0700; a web server must be able to traverse down to HOME
    await chmod(c.dir, 0o755)
    const source = join(c.dir, 'source')
    await sourceTree(source)
    rpm = await readFile(join(source, 'Packages', 'x86_64', 'big.rpm'))
    wwwData = await resolveGroup('www-data')
    const origin = await c.addSite('origin')
    const world = await c.addSite('world')
    const group = await c.addSite('group')
    const closed = await c.addSite('private')
    await c.wire(TREE, origin)
    await c.editConfig(group, { mirror: { mode: 'group', group: 'www-data' } })
    await c.editConfig(closed, { mirror: { mode: 'private' } })
    // an older agent's home: HOME 0700 (as init and StateDirectoryMode=0700 made it), trees/ 0700
    worldHome = new HomeLayout(world.home)
    await mkdir(worldHome.trees, { mode: 0o700 })
    homeModeAtStart = (await lstat(worldHome.root)).mode & 0o777
    try {
      for (const s of c.sites) await c.start(s)
      for (const s of [world, group, closed]) mirrors.set(s.name, await subscribe(c, s))
      const seq = await publish(origin, source, 'v1')
      await Promise.all([world, group, closed].map(async s => { await syncDone(s, seq) }))
    } catch (err) {
      for (const s of c.sites) process.stderr.write(`--- ${s.name} log ---\n${s.log.slice(-6000)}\n`)
      throw err
    }
  }, 180_000)
  afterAll(async () => { await cluster?.cleanup() })

  const read = async (site: string, rel: string, groups?: number[]): Promise<{ ok: boolean, out: Buffer, err: string }> =>
    await asNobody(['cat', join(mirrors.get(site) as string, rel)], groups)

  it('world (default): nobody reads through --to as published; an older 0700 home is opened at start', async () => {
    expect(homeModeAtStart).toBe(0o700)
    expect((await lstat(worldHome.root)).mode & 0o777).toBe(0o711)
    const got = await read('world', 'Packages/x86_64/big.rpm')
    expect(got.err).toBe('')
    expect(got.out.equals(rpm)).toBe(true)
    expect((await asNobody(['ls', join(mirrors.get('world') as string, 'Packages/x86_64')])).out.toString()).toBe('big.rpm\n')
    // a file published 0600 stays unreadable, as with rsync
    expect((await read('world', 'secret')).ok).toBe(false)
  })

  it('world: the keys, database, config and control socket stay private; HOME is not listable', async () => {
    const home = worldHome
    for (const path of [home.peerKey, home.publisherKey, home.config, join(home.db, 'CURRENT'), home.controlSocket]) {
      const r = await asNobody(['cat', path])
      expect(r.ok, path).toBe(false)
      expect(r.err).toMatch(/Permission denied/)
    }
    expect((await asNobody(['ls', home.root])).ok).toBe(false)
    expect((await asNobody(['ls', home.db])).ok).toBe(false)
  })

  it('group: members of www-data read the mirror, others do not', async () => {
    const member = await read('group', 'Packages/x86_64/big.rpm', [wwwData])
    expect(member.err).toBe('')
    expect(member.out.equals(rpm)).toBe(true)
    const stranger = await read('group', 'README')
    expect(stranger.ok).toBe(false)
    expect(stranger.err).toMatch(/Permission denied/)
  })

  it('private: nobody reads anything, in whatever group', async () => {
    expect((await read('private', 'README', [wwwData])).ok).toBe(false)
    expect((await read('private', 'README')).err).toMatch(/Permission denied/)
  })
})
