import { mkdtemp, rm, readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { chunkIdOf } from '../../protocol/chunk-id.js'
import type { ManifestEntry } from '../../protocol/manifest.js'
import { diffManifests, type PathChange } from '../../protocol/manifest-diff.js'
import { splitCommandLine, formatArgv } from '../../agent/core/command-line.js'
import { minimalEnv, runCommand } from '../../agent/core/run-command.js'

// The pure parts of reacting to new versions: the manifest diff, the command-line rule, and the runner of
// operators' commands (real processes: deadlines, process groups, bounded output).

const file = (path: string, text: string, mode = 0o644): ManifestEntry => ({ type: 'file', path, mode, mtimeMs: 1, size: text.length, chunks: text === '' ? [] : [{ id: chunkIdOf(Buffer.from(text)), size: text.length }] })
const dir = (path: string, mode = 0o755): ManifestEntry => ({ type: 'dir', path, mode, mtimeMs: 1 })
const link = (path: string, target: string): ManifestEntry => ({ type: 'symlink', path, mtimeMs: 1, target })

async function * from (entries: ManifestEntry[]): AsyncGenerator<ManifestEntry> { yield * entries }
async function all (older: ManifestEntry[], newer: ManifestEntry[]): Promise<PathChange[]> {
  const out: PathChange[] = []
  for await (const c of diffManifests(from(older), from(newer))) out.push(c)
  return out
}

describe('diffManifests', () => {
  it('finds added, removed, changed and mode-changed paths in one pass, in canonical order', async () => {
    const older = [dir('a'), file('a/edited', 'one'), file('a/gone', 'g'), file('a/same', 'x'), file('a/x', 'x'), link('l', 't1'), file('m', 'm', 0o644), file('t', 'was a file')]
    const newer = [dir('a'), file('a/edited', 'two'), file('a/new', 'n'), file('a/same', 'x'), file('a/x', 'x', 0o600), link('l', 't2'), file('m', 'm', 0o755), dir('t'), file('t/inside', 'i')]
    // a file whose mtime alone moved is not listed
    const touched = older.map(e => e.path === 'a/same' ? { ...e, mtimeMs: 99 } : e)
    expect(await all(touched, newer)).toEqual([
      { change: 'changed', path: 'a/edited', type: 'file', fromMode: 0o644, toMode: 0o644 },
      { change: 'removed', path: 'a/gone', type: 'file' },
      { change: 'added', path: 'a/new', type: 'file' },
      { change: 'mode-changed', path: 'a/x', type: 'file', fromMode: 0o644, toMode: 0o600 },
      { change: 'changed', path: 'l', type: 'symlink' },
      { change: 'mode-changed', path: 'm', type: 'file', fromMode: 0o644, toMode: 0o755 },
      { change: 'changed', path: 't', type: 'dir', fromMode: 0o644, toMode: 0o755 },
      { change: 'added', path: 't/inside', type: 'file' },
    ])
  })

  it('from nothing everything is added; to nothing everything is removed; equal manifests differ in nothing', async () => {
    const entries = [dir('d'), file('d/f', 'f')]
    expect((await all([], entries)).map(c => c.change)).toEqual(['added', 'added'])
    expect((await all(entries, [])).map(c => c.change)).toEqual(['removed', 'removed'])
    expect(await all(entries, entries)).toEqual([])
  })
})

describe('splitCommandLine (commands run without a shell)', () => {
  it.each([
    ['make -C /srv/lab test', ['make', '-C', '/srv/lab', 'test']],
    ["sh -c 'make test && echo ok'", ['sh', '-c', 'make test && echo ok']],
    ['run "a \\"quoted\\" word" \'it\'\'s\'', ['run', 'a "quoted" word', 'its']],
    ['  spaced\targs  ', ['spaced', 'args']],
    ['a\\ b "" c', ['a b', '', 'c']],
    ['/usr/bin/repoclosure --repo=x --arch=x86_64', ['/usr/bin/repoclosure', '--repo=x', '--arch=x86_64']],
  ])('%s', (text, argv) => {
    expect(splitCommandLine(text)).toEqual(argv)
    // what status prints splits back to the same words
    expect(splitCommandLine(formatArgv(argv))).toEqual(argv)
  })

  it.each([
    ['make test && echo ok', 'unquoted &'],
    ['cat x | grep y', 'unquoted |'],
    ['echo $HOME', 'unquoted $'],
    ['rm *.tmp', 'unquoted *'],
    ['echo "open', 'unterminated " quote'],
    ['', 'no command'],
    ['a\nb', 'a line break'],
  ])('refuses %j (%s)', (text, reason) => {
    expect(() => splitCommandLine(text, '--gate')).toThrow(expect.objectContaining({ name: 'CommandLineError', message: expect.stringContaining(reason) }) as Error)
  })
})

describe('runCommand', () => {
  const dirs: string[] = []
  afterEach(async () => { for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true }) })

  it('runs in the given directory with the minimal environment, and keeps the last lines of output', async () => {
    const cwd = await mkdtemp(join(tmpdir(), 'dm-run-'))
    dirs.push(cwd)
    const o = await runCommand({ argv: ['sh', '-c', 'pwd; env | sort; seq 1 100; echo err >&2; exit 3'], cwd, env: { DELTAMESH_SEQ: '7' }, timeoutMs: 10_000, outputLines: 5, baseEnv: { PATH: process.env.PATH, SECRET_TOKEN: 'x', HOME: '/home/x' } })
    expect(o).toMatchObject({ ok: false, exitCode: 3, timedOut: false })
    expect(o.output).toEqual(['97', '98', '99', '100', 'err'])
    const full = await runCommand({ argv: ['sh', '-c', 'pwd; env | sort'], cwd, env: { DELTAMESH_SEQ: '7' }, timeoutMs: 10_000, outputLines: 50, baseEnv: { PATH: process.env.PATH, SECRET_TOKEN: 'x', HOME: '/home/x' } })
    expect(full.ok).toBe(true)
    expect(full.output[0]).toBe(cwd)
    const names = full.output.slice(1).map(l => l.split('=')[0]).filter(n => n !== 'PWD' && n !== 'SHLVL' && n !== '_')
    expect(names.sort()).toEqual(['DELTAMESH_SEQ', 'HOME', 'PATH'])
  })

  it('kills the whole process group at the deadline, children included', async () => {
    const cwd = await mkdtemp(join(tmpdir(), 'dm-run-'))
    dirs.push(cwd)
    const marker = join(cwd, 'child-survived')
    const started = Date.now()
    // the child would write the marker after 2 s unless killed with its parent's group
    const o = await runCommand({ argv: ['sh', '-c', `(sleep 2; echo yes > ${marker}) & echo started; sleep 30`], cwd, env: {}, timeoutMs: 500, killGraceMs: 200 })
    expect(o).toMatchObject({ ok: false, timedOut: true, output: ['started'] })
    expect(Date.now() - started).toBeLessThan(5_000)
    await new Promise(resolve => setTimeout(resolve, 2_500))
    await expect(readFile(marker)).rejects.toMatchObject({ code: 'ENOENT' })
  })

  it('a command that does not exist is a failure with the reason, not an exception', async () => {
    const o = await runCommand({ argv: ['/nonexistent/deltamesh-gate'], cwd: tmpdir(), env: {}, timeoutMs: 5_000 })
    expect(o).toMatchObject({ ok: false, spawnError: 'ENOENT' })
  })

  it('keeps PATH even when the agent has none', () => {
    expect(minimalEnv({}, {})).toEqual({ PATH: '/usr/local/bin:/usr/bin:/bin' })
  })
})
