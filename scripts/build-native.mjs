// Builds agent/native (exact nanosecond file times: utimensat/futimens) with node-gyp at install time.
// Without a compiler the build fails and this prints one warning and exits 0: the agent then sets times
// through node's utimes, to about a microsecond (it says so at start), and everything else works.
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const native = join(here, '..', 'agent', 'native')

/** npm sets npm_config_node_gyp in script environments; else npm's own copy next to this node. */
function nodeGyp () {
  const candidates = [
    process.env.npm_config_node_gyp,
    join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ]
  return candidates.find(p => p !== undefined && p !== '' && existsSync(p))
}

const gyp = nodeGyp()
if (process.env.DELTAMESH_SKIP_NATIVE === '1') {
  process.stdout.write('build-native: skipped (DELTAMESH_SKIP_NATIVE=1)\n')
} else if (gyp === undefined) {
  process.stderr.write('build-native: WARNING node-gyp not found; exact nanosecond mtimes unavailable (about 1 µs instead)\n')
} else {
  // this node's own headers when it has them (Debian's nodejs, the official tarballs): no download needed
  const prefix = join(dirname(process.execPath), '..')
  const nodedir = process.env.npm_config_nodedir === undefined && existsSync(join(prefix, 'include', 'node', 'node_api.h')) ? [`--nodedir=${prefix}`] : []
  const r = spawnSync(process.execPath, [gyp, 'rebuild', '--directory', native, ...nodedir], { encoding: 'utf8' })
  if (r.status === 0) process.stdout.write('build-native: agent/native/build/Release/times.node built\n')
  else {
    const why = `${r.stderr ?? ''}${r.stdout ?? ''}`.trim().split('\n').filter(l => /error|not found|ERR/i.test(l)).slice(-3).join(' | ')
    process.stderr.write(`build-native: WARNING could not build the native helper (${why || `exit ${r.status}`}); mtimes are set to about 1 µs, not to the nanosecond. Install a C compiler and python3, then run: npm rebuild deltamesh (or node scripts/build-native.mjs)\n`)
  }
}
