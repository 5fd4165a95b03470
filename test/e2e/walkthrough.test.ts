import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { REPO, extractWalkthrough, runWalkthrough } from '../../scripts/walkthrough.js'

// The README's walkthrough, run as `npm run walkthrough` runs it (issue 24): its own lines, read from README.md,
// three real agents on 127.0.0.1; the walkthrough removes its temp dir, and the runner's trap does if it fails.

describe('README walkthrough', () => {
  it('is what the runner runs: the sh blocks between the markers, nothing else', async () => {
    const readme = await readFile(join(REPO, 'README.md'), 'utf8')
    const lines = extractWalkthrough(readme)
    expect(lines).toContain('deltamesh subscribe --home $W/hub $TREE --to $W/mirror-hub')
    expect(lines).toContain("--include 'Packages/x86_64/'")
    expect(lines.trimEnd().endsWith('rm -rf $W')).toBe(true)
    expect(() => extractWalkthrough('# no walkthrough here')).toThrow(/walkthrough:begin/)
  })

  it('runs start to finish: origin publishes twice, the hub and the filtered lab hold v2, verify is clean', async () => {
    const started = Date.now()
    const { code, output } = await runWalkthrough({ stdio: 'pipe' })
    if (code !== 0) process.stderr.write(output.slice(-8000))
    expect(code).toBe(0)
    expect(output).toMatch(/published demo\/compose\/BaseOS@2 \(compose-2\)/)
    expect(output).toMatch(/demo\/compose\/BaseOS@2 at \S+\/lab\/trees\/\S+: 5 files, [\d.]+ MiB verified, 0 problem\(s\)/)
    expect(output).toMatch(/demo\/compose\/BaseOS@2 at \S+\/hub\/trees\/\S+: 8 files, [\d.]+ MiB verified, 0 problem\(s\)/)
    expect(output).toContain('deltamesh_tree_current_seq{tree="demo/compose/BaseOS"} 2')
    expect(output).toMatch(/^lab: 2$/m)
    expect(output).not.toMatch(/^drwx.* aarch64$/m) // the lab's filter
    process.stdout.write(`walkthrough: ${((Date.now() - started) / 1000).toFixed(1)} s\n`)
  }, 180_000)
})
