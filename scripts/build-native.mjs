// Builds agent/native (exact nanosecond file times: utimensat/futimens) with node-gyp at install time.
// Without a compiler the build fails and this prints one warning and exits 0: the agent then sets times
// through node's utimes, to the microsecond (it says so at start), and everything else works.
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

/**
 * The cause in a line or two, out of node-gyp's output: the compiler's or make's own words (a missing cc,
 * Python not found), then node-gyp's error; not its trailer (command line, versions, cwd).
 */
function reasonOf (output) {
  const lines = output.split('\n').map(l => l.trim()).filter(l => l !== '')
  const cause = lines.find(l => !l.startsWith('gyp ') && /\berror\b|not found|no such file|could not find|permission denied/i.test(l) && !l.startsWith('make: ***')) ??
    lines.find(l => l.startsWith('make: ***'))
  const gypError = lines.find(l => /^gyp ERR! (stack )?Error: /.test(l))?.replace(/^gyp ERR! (stack )?/, '') ??
    lines.find(l => /^gyp ERR! find Python/.test(l) && /not find|no python/i.test(l))?.replace(/^gyp ERR! /, '')
  return [cause, gypError].filter(l => l !== undefined).join('; ').slice(0, 400)
}

const gyp = nodeGyp()
if (process.env.DELTAMESH_SKIP_NATIVE === '1') {
  process.stdout.write('build-native: skipped (DELTAMESH_SKIP_NATIVE=1)\n')
} else if (gyp === undefined) {
  process.stderr.write('build-native: WARNING node-gyp not found (neither npm_config_node_gyp nor npm\'s own copy); mtimes are set to about 1 µs, not to the nanosecond\n')
} else {
  // this node's own headers when it has them (Debian's nodejs, the official tarballs): no download needed
  const prefix = join(dirname(process.execPath), '..')
  const nodedir = process.env.npm_config_nodedir === undefined && existsSync(join(prefix, 'include', 'node', 'node_api.h')) ? [`--nodedir=${prefix}`] : []
  const r = spawnSync(process.execPath, [gyp, 'rebuild', '--directory', native, ...nodedir], { encoding: 'utf8' })
  if (r.status === 0) process.stdout.write('build-native: agent/native/build/Release/times.node built\n')
  else {
    const why = reasonOf(`${r.stdout ?? ''}\n${r.stderr ?? ''}`)
    process.stderr.write(`build-native: WARNING could not build the native helper (${why || `exit ${r.status}`}); mtimes are set to about 1 µs, not to the nanosecond. Install a C compiler and python3, then run: node scripts/build-native.mjs\n`)
  }
}
