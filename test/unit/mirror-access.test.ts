import { chmod, lstat, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { ConfigError, defaultConfigText, parseConfig } from '../../agent/core/config.js'
import { HomeLayout } from '../../agent/core/home.js'
import { applyMirrorAccess, openTreePath, resolveGroup } from '../../agent/fs/mirror-access.js'

const modeOf = async (path: string): Promise<number> => (await lstat(path)).mode & 0o7777
const isRoot = process.getuid?.() === 0

let dir: string | undefined
afterEach(async () => {
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  dir = undefined
})

/** A home as an older agent left it: 0700, LevelDB and config readable inside, tree dirs made under umask 077. */
async function oldHome (): Promise<HomeLayout> {
  dir = await mkdtemp(join(tmpdir(), 'deltamesh-mirror-'))
  const home = new HomeLayout(join(dir, 'home'))
  await mkdir(home.root, { mode: 0o700 })
  await writeFile(home.config, '', { mode: 0o644 })
  await writeFile(home.limitOverrides, '{}', { mode: 0o644 })
  await mkdir(home.db, { mode: 0o755 })
  await writeFile(join(home.db, 'CURRENT'), 'x', { mode: 0o644 })
  await mkdir(home.identityDir, { mode: 0o700 })
  await writeFile(home.peerKey, 'k', { mode: 0o600 })
  await mkdir(home.versionDir('lab/t', 1), { recursive: true, mode: 0o700 })
  await mkdir(home.stagingDir('lab/t', 2), { recursive: true, mode: 0o755 })
  // a file published 0600 (or setuid) keeps its mode: files are never touched
  await writeFile(join(home.versionDir('lab/t', 1), 'f'), 'x', { mode: 0o600 })
  await chmod(join(home.versionDir('lab/t', 1), 'f'), 0o4700)
  // something of someone else's, reached through a symlink: never followed
  await writeFile(join(dir, 'elsewhere'), 'x', { mode: 0o644 })
  await symlink(join(dir, 'elsewhere'), join(home.root, 'link'))
  for (const d of [home.trees, home.treeDir('lab/t'), home.versionsDir('lab/t')]) await chmod(d, 0o700)
  return home
}

describe('[mirror] modes on a home', () => {
  it('world: HOME 0711, the private entries owner-only, the path to the versions traversable, staging closed', async () => {
    const home = await oldHome()
    const result = await applyMirrorAccess(home, { mode: 'world' })
    expect(await modeOf(home.root)).toBe(0o711)
    expect(await modeOf(home.config)).toBe(0o600)
    expect(await modeOf(home.limitOverrides)).toBe(0o600)
    expect(await modeOf(home.db)).toBe(0o700)
    expect(await modeOf(home.identityDir)).toBe(0o700)
    for (const d of [home.trees, home.treeDir('lab/t'), home.versionsDir('lab/t'), home.versionDir('lab/t', 1)]) expect(await modeOf(d)).toBe(0o755)
    expect(await modeOf(join(home.treeDir('lab/t'), 'staging'))).toBe(0o700)
    expect(await modeOf(join(home.versionDir('lab/t', 1), 'f'))).toBe(0o4700)
    expect(await modeOf(join(dir as string, 'elsewhere'))).toBe(0o644)
    expect(result.changed.length).toBeGreaterThan(5)
    // idempotent: a second start changes nothing
    expect((await applyMirrorAccess(home, { mode: 'world' })).changed).toEqual([])
  })

  it('private closes HOME and the trees gate; world opens them again', async () => {
    const home = await oldHome()
    await applyMirrorAccess(home, { mode: 'world' })
    await applyMirrorAccess(home, { mode: 'private' })
    expect(await modeOf(home.root)).toBe(0o700)
    expect(await modeOf(home.trees)).toBe(0o700)
    await applyMirrorAccess(home, { mode: 'world' })
    expect(await modeOf(home.trees)).toBe(0o755)
  })

  it.runIf(isRoot)('group: the trees gate 0750 with that group, HOME 0711', async () => {
    const home = await oldHome()
    await applyMirrorAccess(home, { mode: 'group', group: 'www-data' })
    const st = await lstat(home.trees)
    expect(st.gid).toBe(await resolveGroup('www-data'))
    expect(st.mode & 0o7777).toBe(0o750)
    expect(await modeOf(home.root)).toBe(0o711)
    expect(await modeOf(home.treeDir('lab/t'))).toBe(0o755)
  })

  it('an unknown group is refused by name', async () => {
    const home = await oldHome()
    await expect(applyMirrorAccess(home, { mode: 'group', group: 'no-such-group-dm' })).rejects.toMatchObject({ name: 'MirrorAccessError' })
    expect(await resolveGroup('4242')).toBe(4242)
  })

  it('a first start makes db/ private before LevelDB would create it 0755', async () => {
    const home = await oldHome()
    await rm(home.db, { recursive: true })
    await applyMirrorAccess(home, { mode: 'world' })
    expect(await modeOf(home.db)).toBe(0o700)
  })

  it('a new tree path is made traversable whatever the umask', async () => {
    const home = await oldHome()
    await mkdir(home.versionsDir('lab/u'), { recursive: true, mode: 0o700 })
    await openTreePath(home, 'lab/u')
    expect(await modeOf(home.treeDir('lab/u'))).toBe(0o755)
    expect(await modeOf(home.versionsDir('lab/u'))).toBe(0o755)
  })
})

describe('[mirror] config', () => {
  it('defaults to world; init writes the section', () => {
    expect(parseConfig('', 'c.toml').mirror).toEqual({ mode: 'world' })
    expect(parseConfig(defaultConfigText(['/ip4/127.0.0.1/tcp/4101']), 'c.toml').mirror).toEqual({ mode: 'world' })
    expect(parseConfig('[mirror]\nmode = "group"\ngroup = "www-data"', 'c.toml').mirror).toEqual({ mode: 'group', group: 'www-data' })
  })

  it.each([
    ['[mirror]\nmode = "group"', 'mirror.group', /www-data/],
    ['[mirror]\nmode = "world"\ngroup = "www-data"', 'mirror.group', /only to mode = "group"/],
    ['[mirror]\nmode = "public"', 'mirror.mode', /world|group|private/],
    ['[mirror]\nmode = "group"\ngroup = "a b"', 'mirror.group', /group name/],
    ['[mirror]\nowner = "x"', 'mirror', /unknown key.*owner/],
  ])('%s → ConfigError at %s', (text, key, expected) => {
    try {
      parseConfig(text, 'c.toml')
      expect.unreachable()
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError)
      expect((err as ConfigError).key).toBe(key)
      expect((err as ConfigError).expected).toMatch(expected)
    }
  })
})
