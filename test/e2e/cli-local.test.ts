import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parse as parseToml } from 'smol-toml'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { cliOk, runCli } from '../../agent/demo/local-cluster.js'
import { generateTree, type TreeSpec } from '../../agent/demo/tree-gen.js'

// The compiled CLI as a process, without a running agent: help for every command, init, config errors,
// publish / manifest / verify on a local home, and the missing-home error.

const TREE = 'lab/cli/local'
const SPEC: TreeSpec = { seed: 'cli-local', files: 40, largeBytes: 2 * 1024 * 1024, largeFiles: 1, smallMax: 16 * 1024 }
const PEER_ID = /^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$/
const PUBLISHER_KEY = /^ed25519:[A-Za-z0-9_-]{43}$/
/** No home from the environment, whatever the shell running the tests has set. */
const NO_HOME_ENV = { DELTAMESH_HOME: '' }

let dir: string
beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'deltamesh-cli-')) })
afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

/** Names listed under "Commands:" in a help text (without `help` itself). */
function commandNames (help: string): string[] {
  const section = help.split(/^Commands:$/m)[1] ?? ''
  return [...section.matchAll(/^ {2}([a-z][a-z-]*)\b/gm)].map(m => m[1] as string).filter(n => n !== 'help')
}

describe('deltamesh --help', () => {
  it('lists the commands, and every command (and subcommand) has working --help', async () => {
    const top = await cliOk(['--help'])
    expect(top).toMatch(/^Usage: deltamesh/m)
    const names = commandNames(top)
    // the core ones at least; anything added later is covered by the loop below
    expect(names).toEqual(expect.arrayContaining(['init', 'publish', 'manifest', 'verify', 'agent', 'status']))
    const queue = names.map(n => [n])
    const checked: string[] = []
    while (queue.length > 0) {
      const batch = queue.splice(0)
      const results = await Promise.all(batch.map(async path => ({ path, r: await runCli([...path, '--help'], { env: NO_HOME_ENV }) })))
      for (const { path, r } of results) {
        const what = `deltamesh ${path.join(' ')} --help`
        expect(r.code, `${what}: ${r.stderr}`).toBe(0)
        expect(r.stdout, what).toContain(`Usage: deltamesh ${path.join(' ')}`)
        expect(r.stdout.length, what).toBeGreaterThan(80)
        checked.push(path.join(' '))
        for (const sub of commandNames(r.stdout)) queue.push([...path, sub])
      }
    }
    expect(checked.length).toBeGreaterThan(names.length) // `peers` has subcommands
  })
})

describe('init', () => {
  it('prints the site identity as JSON, keeps it on a second run, writes a commented TOML config', async () => {
    const home = join(dir, 'init-home')
    const first = JSON.parse(await cliOk(['init', '--home', home, '--listen', '/ip4/127.0.0.1/tcp/0', '--json'])) as Record<string, unknown>
    expect(Object.keys(first).sort()).toEqual(['multiaddrs', 'peerId', 'publisherKey'])
    expect(first.peerId).toMatch(PEER_ID)
    expect(first.multiaddrs).toEqual([`/ip4/127.0.0.1/tcp/0/p2p/${first.peerId as string}`])
    expect(first.publisherKey).toMatch(PUBLISHER_KEY)

    const second = JSON.parse(await cliOk(['init', '--home', home, '--json'])) as Record<string, unknown>
    expect(second).toEqual(first)
    const human = await cliOk(['init', '--home', home])
    expect(human).toContain('already initialised')
    expect(human).toContain(first.peerId as string)
    expect(human).toContain(first.publisherKey as string)

    const text = await readFile(join(home, 'config.toml'), 'utf8')
    expect(text.split('\n').filter(l => l.startsWith('#')).length).toBeGreaterThanOrEqual(10)
    const parsed = parseToml(text) as { agent: { listen: string[] } }
    expect(parsed.agent.listen).toEqual(['/ip4/127.0.0.1/tcp/0'])
  })

  it('a broken config makes commands fail naming the file, the key and what is expected', async () => {
    const home = join(dir, 'broken-home')
    await cliOk(['init', '--home', home, '--listen', '/ip4/127.0.0.1/tcp/0'])
    const file = join(home, 'config.toml')
    const good = await readFile(file, 'utf8')
    await writeFile(file, good.replace(/^listen = .*$/m, 'listen = 5'))
    const src = join(dir, 'broken-src')
    await generateTree(src, { ...SPEC, files: 3, largeFiles: 0, largeBytes: 0 })
    for (const args of [['publish', '--home', home, TREE, src], ['verify', '--home', home, TREE], ['init', '--home', home], ['peers', 'list', '--home', home]]) {
      const r = await runCli(args)
      expect(r.code, args.join(' ')).toBe(1)
      expect(r.stderr, args.join(' ')).toContain(file)
      expect(r.stderr, args.join(' ')).toContain('agent.listen')
      expect(r.stderr, args.join(' ')).toMatch(/expected .*array/)
      expect(r.stderr.trim().split('\n'), 'one line, no stack trace').toHaveLength(1)
    }
    await writeFile(file, good.replace('[limits]', '[limits]\nbandwidth = "fast"'))
    const r = await runCli(['publish', '--home', home, TREE, src])
    expect(r.code).toBe(1)
    expect(r.stderr).toContain(file)
    expect(r.stderr).toMatch(/limits.*bandwidth/)
  })
})

describe('publish, manifest and verify without an agent', () => {
  it('publishes, refuses to republish the unchanged tree unless forced (same root), matches manifest, verifies, detects an edit', async () => {
    const home = join(dir, 'pub-home')
    const src = join(dir, 'pub-src')
    await cliOk(['init', '--home', home, '--listen', '/ip4/127.0.0.1/tcp/0'])
    await generateTree(src, SPEC)

    const text = await cliOk(['publish', '--home', home, TREE, src, '--label', 'first'])
    const m = /^published (\S+)@(\d+) \(first\) root ([0-9a-f]{64})\n\s+(\d+) files, .*chunks; new: \d+ chunks/.exec(text)
    expect(m, text).not.toBeNull()
    expect(m?.[1]).toBe(TREE)
    expect(m?.[2]).toBe('1')
    const root = m?.[3] as string
    expect(Number(m?.[4])).toBe(SPEC.files + 3) // packages, one image, repomd.xml, install.sh

    // the unchanged tree is the newest version already: nothing is published, and the command says so
    const same = await cliOk(['publish', '--home', home, TREE, src])
    expect(same).toBe(`unchanged: ${TREE}@1 is this tree already (root ${root}); nothing published (--force publishes it again)\n`)
    const again = JSON.parse(await cliOk(['publish', '--home', home, TREE, src, '--json', '--force'])) as Record<string, unknown>
    expect(again).toMatchObject({ tree: TREE, seq: 2, label: '', root, files: SPEC.files + 3 })
    for (const k of ['bytes', 'chunks', 'newBytes', 'newChunks', 'cachedFiles', 'manifestBytes', 'durationMs']) expect(typeof again[k], k).toBe('number')
    expect(again.newBytes).toBe(0) // every chunk was indexed by the first publish

    const manifest = JSON.parse(await cliOk(['manifest', src, '--json'])) as Record<string, unknown>
    expect(manifest.root).toBe(root)
    expect(manifest.files).toBe(SPEC.files + 3)
    expect(manifest.bytes).toBe(again.bytes)

    const ok = await runCli(['verify', '--home', home, TREE])
    expect(ok.code, ok.stderr).toBe(0)
    expect(ok.stdout).toContain(`${TREE}@2`)
    expect(ok.stdout).toContain('0 problem(s)')

    // edit a published file in place: same size, one byte different
    const victim = 'images/disk-0.img'
    const data = await readFile(join(src, victim))
    data[12345] = (data[12345] as number) ^ 0x80
    await writeFile(join(src, victim), data)
    const bad = await runCli(['verify', '--home', home, TREE])
    expect(bad.code, bad.stderr).toBe(2)
    expect(bad.stdout).toContain(victim)
    // the rewrite moved its mtime too; the chunk that holds byte 12345 is named by its range
    expect(bad.stdout).toContain('2 problem(s)')
    expect(bad.stdout).toMatch(/mtime .*, manifest says /)
    const range = /content differs in bytes (\d+)–(\d+)/.exec(bad.stdout)
    expect(Number(range?.[1])).toBeLessThanOrEqual(12345)
    expect(Number(range?.[2])).toBeGreaterThanOrEqual(12345)
    expect(bad.stderr).toContain('1 file(s) differ')
    const badJson = await runCli(['verify', '--home', home, TREE, '--json'])
    expect(badJson.code).toBe(2)
    expect((JSON.parse(badJson.stdout) as { problems: Array<{ path: string }> }).problems.map(p => p.path)).toEqual([victim, victim])
  })
})

describe('no home', () => {
  it('commands that need a home fail with a clear error and exit 1 when neither --home nor DELTAMESH_HOME is given', async () => {
    const results = await Promise.all([['init'], ['publish', TREE, dir], ['verify', TREE], ['status']].map(async args => ({ args, r: await runCli(args, { env: NO_HOME_ENV }) })))
    for (const { args, r } of results) {
      expect(r.code, args.join(' ')).toBe(1)
      expect(r.stderr, args.join(' ')).toMatch(/--home/)
      expect(r.stderr, args.join(' ')).toMatch(/DELTAMESH_HOME/)
      expect(r.stderr.trim().split('\n')).toHaveLength(1)
    }
  })
})

describe('output to a reader that stops early', () => {
  it('`manifest --entries | head -1` prints one line and exits 0, no EPIPE trace', async () => {
    const { spawnSync } = await import('node:child_process')
    const dir = await mkdtemp(join(tmpdir(), 'dm-epipe-'))
    try {
      for (let i = 0; i < 2000; i++) await writeFile(join(dir, `f${i}`), String(i))
      const cli = new URL('../../dist/agent/cli.js', import.meta.url).pathname
      const r = spawnSync('bash', ['-o', 'pipefail', '-c', `"${process.execPath}" "${cli}" manifest "${dir}" --entries | head -1`], { encoding: 'utf8' })
      expect(r.stdout.trim().split('\n')).toHaveLength(1)
      expect(r.stderr).not.toMatch(/EPIPE|Error/)
      expect(r.status).toBe(0)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})

describe('addresses other sites dial', () => {
  it('init prints no unspecified address (and says how to announce one); --announce is what it prints; peers add refuses 0.0.0.0, itself and a duplicate', async () => {
    const base = await mkdtemp(join(tmpdir(), 'dm-addr-'))
    try {
      const wild = await cliOk(['init', '--home', join(base, 'wild'), '--listen', '/ip4/0.0.0.0/tcp/0'])
      expect(wild).not.toContain('/ip4/0.0.0.0')
      expect(wild).toMatch(/none to give: .*--announce/)
      const announced = JSON.parse(await cliOk(['init', '--home', join(base, 'ann'), '--listen', '/ip4/0.0.0.0/tcp/0', '--announce', '/ip4/127.0.0.1/tcp/4999', '--json'])) as { peerId: string, multiaddrs: string[] }
      expect(announced.multiaddrs).toEqual([`/ip4/127.0.0.1/tcp/4999/p2p/${announced.peerId}`])
      const self = JSON.parse(await cliOk(['init', '--home', join(base, 'wild'), '--json'])) as { peerId: string }
      const refused = async (addr: string): Promise<string> => { const r = await runCli(['peers', 'add', '--home', join(base, 'wild'), addr]); expect(r.code, addr).not.toBe(0); return r.stderr }
      expect(await refused(`/ip4/0.0.0.0/tcp/4999/p2p/${announced.peerId}`)).toMatch(/unspecified address/)
      expect(await refused(`/ip4/127.0.0.1/tcp/4998/p2p/${self.peerId}`)).toMatch(/own peer id/)
      await cliOk(['peers', 'add', '--home', join(base, 'wild'), '--name', 'ann', announced.multiaddrs[0] as string])
      expect(await refused(announced.multiaddrs[0] as string)).toMatch(/listed already as ann/)
      expect((parseToml(await readFile(join(base, 'wild', 'config.toml'), 'utf8')) as { peers: unknown[] }).peers).toHaveLength(1)
    } finally {
      await rm(base, { recursive: true, force: true })
    }
  })
})
