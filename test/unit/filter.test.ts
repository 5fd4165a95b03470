import { describe, expect, it } from 'vitest'
import type { ManifestEntry } from '../../protocol/manifest.js'
import { compileFilter, FilterPatternError, MAX_FILTER_PATTERNS, sameFilter, validateFilter, type FilterSpec } from '../../agent/versions/filter.js'
import { checkSelection, countSelected, parseMaxDrop, type SelectionGuard } from '../../agent/versions/selection-guard.js'
import { SelectionRefusedError } from '../../agent/versions/errors.js'

// A small compose: what each pattern selects is read off this tree (directories have a trailing '/').
const TREE = [
  'Packages/', 'Packages/x86_64/', 'Packages/x86_64/bash.rpm', 'Packages/x86_64/debug/', 'Packages/x86_64/debug/bash-debuginfo.rpm',
  'Packages/aarch64/', 'Packages/aarch64/bash.rpm', 'Packages/x86_64.txt',
  'images/', 'images/boot.iso', 'images/debug/', 'images/debug/trace.log',
  'repodata/', 'repodata/repomd.xml', 'repodata.bak', 'boot.iso',
]

function selected (spec: FilterSpec): string[] {
  const filter = compileFilter(spec)
  return TREE.filter(p => {
    const dir = p.endsWith('/')
    return filter === undefined || filter(dir ? p.slice(0, -1) : p, dir ? 'dir' : 'file')
  })
}

function refusal (spec: FilterSpec): FilterPatternError {
  try {
    compileFilter(spec)
  } catch (err) {
    expect(err).toBeInstanceOf(FilterPatternError)
    return err as FilterPatternError
  }
  throw new Error(`${JSON.stringify(spec)} was accepted`)
}

describe('subscription patterns', () => {
  it('a trailing slash takes the directory and everything under it (rsync habit), like dir/**', () => {
    const withSlash = selected({ include: ['Packages/x86_64/'] })
    expect(withSlash).toEqual(['Packages/x86_64/', 'Packages/x86_64/bash.rpm', 'Packages/x86_64/debug/', 'Packages/x86_64/debug/bash-debuginfo.rpm'])
    // the same files as the glob, plus the directory entry itself
    expect(selected({ include: ['Packages/x86_64/**'] }).filter(p => !p.endsWith('/'))).toEqual(withSlash.filter(p => !p.endsWith('/')))
    // rsync's dir/*** reads the same; a trailing slash never matches a file of that name
    expect(selected({ include: ['Packages/x86_64/***'] })).toEqual(withSlash)
    expect(selected({ include: ['repodata.bak/'] })).toEqual([])
  })

  it('a pattern naming a directory without the slash takes its content too', () => {
    expect(selected({ include: ['repodata'] })).toEqual(['repodata/', 'repodata/repomd.xml'])
  })

  it('a pattern without a slash matches the name at any depth; one with a slash inside is anchored at the root', () => {
    expect(selected({ include: ['*.iso'] })).toEqual(['images/boot.iso', 'boot.iso'])
    expect(selected({ exclude: ['debug/'] }).some(p => p.includes('debug'))).toBe(false)
    expect(selected({ include: ['x86_64/'] })).toEqual(selected({ include: ['Packages/x86_64/'] }))
    // a slash inside anchors: aarch64/bash.rpm is no path from the root; a trailing slash wants a directory
    expect(selected({ include: ['aarch64/bash.rpm'] })).toEqual([])
    expect(selected({ include: ['bash.rpm/'] })).toEqual([])
  })

  it('a leading slash anchors a bare name at the tree root', () => {
    expect(selected({ include: ['/*.iso'] })).toEqual(['boot.iso'])
    expect(selected({ include: ['/debug/'] })).toEqual([])
    expect(selected({ include: ['/Packages/x86_64/'] })).toEqual(selected({ include: ['Packages/x86_64/'] }))
  })

  it('exclude wins over include, for a directory and everything under it', () => {
    expect(selected({ include: ['Packages/'], exclude: ['debug/', 'aarch64'] })).toEqual(['Packages/', 'Packages/x86_64/', 'Packages/x86_64/bash.rpm', 'Packages/x86_64.txt'])
    expect(selected({})).toEqual(TREE)
    expect(compileFilter({ include: [], exclude: [] })).toBeUndefined()
  })

  it('the globs of existing subscriptions keep their meaning', () => {
    expect(selected({ include: ['Packages/x86_64/**', 'repodata/**'] }).filter(p => !p.endsWith('/')))
      .toEqual(['Packages/x86_64/bash.rpm', 'Packages/x86_64/debug/bash-debuginfo.rpm', 'repodata/repomd.xml'])
    expect(selected({ include: ['**/*.rpm'], exclude: ['**/debug/**'] }).filter(p => !p.endsWith('/'))).toEqual(['Packages/x86_64/bash.rpm', 'Packages/aarch64/bash.rpm'])
  })

  it('refuses patterns that cannot mean anything, naming the pattern and the fix', () => {
    expect(refusal({ include: [''] }).message).toMatch(/^--include "": empty pattern; .*Packages\/x86_64\//)
    expect(refusal({ exclude: ['   '] }).option).toBe('exclude')
    expect(refusal({ include: ['/'] }).message).toMatch(/whole tree; omit --include/)
    expect(refusal({ include: ['**'] }).message).toMatch(/whole tree/)
    expect(refusal({ include: ['Packages//x86_64/'] }).message).toMatch(/empty path segment.*write it as "Packages\/x86_64\/"/)
    expect(refusal({ include: ['./Packages/'] }).message).toMatch(/`\.` or `\.\.` segment.*"Packages\/"/)
    expect(refusal({ include: ['Packages/../repodata'] }).pattern).toBe('Packages/../repodata')
    expect(refusal({ include: ['//srv'] }).message).toMatch(/empty path segment/)
    expect(refusal({ include: ['!debug'] }).message).toMatch(/negation.*--exclude/)
    expect(refusal({ include: ['a\0b'] }).message).toMatch(/NUL/)
    expect(refusal({ include: ['x'.repeat(5000)] }).message).toMatch(/longer than/)
    expect(refusal({ include: ['trailing\\'] }).message).toMatch(/lone `\\`/)
    expect(refusal({ include: Array.from({ length: MAX_FILTER_PATTERNS + 1 }, (_, i) => `d${i}/`) }).message).toMatch(/more than/)
    expect(refusal({ include: ['ok/'], exclude: ['bad//x'] }).name).toBe('FilterPatternError')
    expect(() => { validateFilter({ include: ['Packages/x86_64/', '/repodata/', '*.iso', 'a\\*b'] }) }).not.toThrow()
  })

  it('compares subscriptions as sets', () => {
    expect(sameFilter({ include: ['a/', 'b/'] }, { include: ['b/', 'a/'], exclude: [] })).toBe(true)
    expect(sameFilter({ include: ['a/'] }, { include: ['a/**'] })).toBe(false)
    expect(sameFilter({}, { exclude: ['x'] })).toBe(false)
  })
})

describe('selection guard', () => {
  const entries = async function * (): AsyncGenerator<ManifestEntry> {
    for (const p of TREE) {
      if (p.endsWith('/')) yield { type: 'dir', path: p.slice(0, -1), mode: 0o755, mtimeMs: 0 } as ManifestEntry
      else yield { type: 'file', path: p, mode: 0o644, mtimeMs: 0, size: 0, chunks: [] } as unknown as ManifestEntry
    }
  }
  const guard = (g: Partial<SelectionGuard> = {}): SelectionGuard => ({ filter: { include: ['Packages/x86-64/'] }, allowEmpty: false, maxDropPercent: 50, ...g })
  const at = { tree: 'lab/os', seq: 7 }

  it('counts the regular files a filter selects', async () => {
    expect(await countSelected(entries(), compileFilter({ include: ['Packages/x86_64/'] }))).toEqual({ selected: 2, total: 9 })
    expect(await countSelected(entries(), undefined)).toEqual({ selected: 9, total: 9 })
  })

  it('refuses an empty selection with the filter, the counts and the served version; --allow-empty lets it through', () => {
    let err: unknown
    try { checkSelection(at, { selected: 0, total: 9 }, guard({ previous: { seq: 6, files: 2, sameFilter: true }, mirror: '/srv/mirror' })) } catch (e) { err = e }
    expect(err).toBeInstanceOf(SelectionRefusedError)
    const refused = err as SelectionRefusedError
    expect(refused.name).toBe('SelectionRefusedError')
    expect(refused.reason).toBe('empty')
    expect(refused.message).toContain("--include 'Packages/x86-64/'")
    expect(refused.message).toContain('selects 0 of its 9 files')
    expect(refused.message).toContain('v6 (2 files) stays served at /srv/mirror')
    expect(refused.message).toContain('--allow-empty')
    expect(checkSelection(at, { selected: 0, total: 9 }, guard({ allowEmpty: true, previous: { seq: 6, files: 2, sameFilter: true } })).selected).toBe(0)
  })

  it('refuses a drop of more than --max-drop under the same filter; 100% never refuses', () => {
    const previous = { seq: 6, files: 100, sameFilter: true }
    expect(() => checkSelection(at, { selected: 50, total: 200 }, guard({ previous }))).not.toThrow() // exactly 50 %: allowed
    expect(() => checkSelection(at, { selected: 49, total: 200 }, guard({ previous }))).toThrow(/51 % fewer than the 100 of v6, more than --max-drop 50%/)
    expect(() => checkSelection(at, { selected: 1, total: 200 }, guard({ previous, maxDropPercent: 100 }))).not.toThrow()
    expect(() => checkSelection(at, { selected: 95, total: 200 }, guard({ previous, maxDropPercent: 0 }))).toThrow(SelectionRefusedError)
    // a filter the operator changed is checked for emptiness only
    expect(() => checkSelection(at, { selected: 1, total: 200 }, guard({ previous: { ...previous, sameFilter: false } }))).not.toThrow()
  })

  it('parses --max-drop', () => {
    expect(parseMaxDrop('50%')).toBe(50)
    expect(parseMaxDrop('12.5')).toBe(12.5)
    expect(parseMaxDrop(100)).toBe(100)
    expect(() => parseMaxDrop('150%')).toThrow(RangeError)
    expect(() => parseMaxDrop('half')).toThrow(/0% to 100%/)
  })
})
