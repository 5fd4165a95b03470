import { InvalidPathError, InvalidTreeNameError } from './errors.js'
import { MAX_NAME_BYTES, MAX_PATH_BYTES, MAX_TREE_NAME_BYTES } from './limits.js'

// Names are bytes. POSIX allows every byte in a name but '/' and NUL, and a mirror must carry them all:
// systemd's '\x2d' escapes, newlines, tabs, Latin-1 names from old archives. In memory a path stays a JS
// string (every Map, glob and log line keeps working), with the bytes that are not valid UTF-8 held as lone
// surrogates U+DC80..U+DCFF, one per byte (Python's "surrogateescape", PEP 383). The mapping is a bijection
// between byte strings and canonical strings: valid UTF-8 decodes as text, anything else byte by byte, and a
// valid UTF-8 sequence is never written as escapes (checked by validateRelativePath). The bytes go on the wire
// (manifest format 2) and to the filesystem (fsPath); the string is only ever an in-memory name for them.

/** Any surrogate; with the u flag a class of surrogates matches only unpaired ones. */
const LONE_SURROGATE = /[\uD800-\uDFFF]/u
const ESCAPE_BASE = 0xdc00
const strictUtf8 = new TextDecoder('utf-8', { fatal: true })

/** True when `path` holds escaped bytes (a lone surrogate), so that Node's UTF-8 conversion would mangle it. */
export function hasEscapedBytes (path: string): boolean {
  return LONE_SURROGATE.test(path)
}

/** The name's bytes: UTF-8 of the text, each escaped byte as itself. */
export function pathToBytes (path: string): Buffer {
  if (!LONE_SURROGATE.test(path)) return Buffer.from(path, 'utf8')
  const out: number[] = []
  for (let i = 0; i < path.length; i++) {
    const unit = path.charCodeAt(i)
    if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < path.length) {
      const next = path.charCodeAt(i + 1)
      if (next >= 0xdc00 && next <= 0xdfff) {
        for (const b of Buffer.from(path.slice(i, i + 2), 'utf8')) out.push(b)
        i++
        continue
      }
    }
    if (unit >= 0xdc80 && unit <= 0xdcff) { out.push(unit - ESCAPE_BASE); continue }
    if (unit >= 0xd800 && unit <= 0xdfff) throw new InvalidPathError(path, 'holds a surrogate that is not an escaped byte')
    for (const b of Buffer.from(path[i] as string, 'utf8')) out.push(b)
  }
  return Buffer.from(out)
}

/** The canonical string of a name's bytes (see above). */
export function bytesToPath (bytes: Uint8Array): string {
  try {
    return strictUtf8.decode(bytes)
  } catch {
    return decodeWithEscapes(bytes)
  }
}

/** Length of the valid UTF-8 sequence starting at `i`, or 0 (overlongs, surrogates and > U+10FFFF are invalid). */
function utf8SequenceAt (bytes: Uint8Array, i: number): number {
  const b0 = bytes[i] as number
  if (b0 < 0x80) return 1
  const cont = (k: number, lo = 0x80, hi = 0xbf): boolean => i + k < bytes.length && (bytes[i + k] as number) >= lo && (bytes[i + k] as number) <= hi
  if (b0 >= 0xc2 && b0 <= 0xdf) return cont(1) ? 2 : 0
  if (b0 === 0xe0) return cont(1, 0xa0) && cont(2) ? 3 : 0
  if ((b0 >= 0xe1 && b0 <= 0xec) || b0 === 0xee || b0 === 0xef) return cont(1) && cont(2) ? 3 : 0
  if (b0 === 0xed) return cont(1, 0x80, 0x9f) && cont(2) ? 3 : 0
  if (b0 === 0xf0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0
  if (b0 >= 0xf1 && b0 <= 0xf3) return cont(1) && cont(2) && cont(3) ? 4 : 0
  if (b0 === 0xf4) return cont(1, 0x80, 0x8f) && cont(2) && cont(3) ? 4 : 0
  return 0
}

function decodeWithEscapes (bytes: Uint8Array): string {
  let out = ''
  for (let i = 0; i < bytes.length;) {
    const n = utf8SequenceAt(bytes, i)
    if (n === 0) {
      out += String.fromCharCode(ESCAPE_BASE + (bytes[i] as number))
      i++
    } else {
      out += Buffer.from(bytes.subarray(i, i + n)).toString('utf8')
      i += n
    }
  }
  return out
}

/**
 * What to hand to node:fs for a path that may hold escaped bytes: the string itself when it is plain text
 * (no conversion, the common case), else its bytes — Node would write a lone surrogate as U+FFFD.
 */
export function fsPath (path: string): string | Buffer {
  return LONE_SURROGATE.test(path) ? pathToBytes(path) : path
}

/** The name of a directory entry read with `encoding: 'buffer'`, as a path string. */
export function nameFromFs (name: Buffer | string): string {
  return typeof name === 'string' ? name : bytesToPath(name)
}

/**
 * An unambiguous, printable form of a path for people (CLI, logs, dashboard): backslash as '\\', control
 * characters as '\n', '\t' or '\xNN', and each byte that is not valid UTF-8 as '\xNN'. Plain names are
 * returned unchanged.
 */
export function displayPath (path: string): string {
  // eslint-disable-next-line no-control-regex
  if (!/[\u0000-\u001f\u007f\\]/.test(path) && !LONE_SURROGATE.test(path)) return path
  let out = ''
  for (let i = 0; i < path.length; i++) {
    const unit = path.charCodeAt(i)
    if (unit === 0x5c) out += '\\\\'
    else if (unit === 0x0a) out += '\\n'
    else if (unit === 0x09) out += '\\t'
    else if (unit === 0x0d) out += '\\r'
    else if (unit < 0x20 || unit === 0x7f) out += `\\x${unit.toString(16).padStart(2, '0')}`
    else if (unit >= 0xdc80 && unit <= 0xdcff && !(i > 0 && path.charCodeAt(i - 1) >= 0xd800 && path.charCodeAt(i - 1) <= 0xdbff)) out += `\\x${(unit - ESCAPE_BASE).toString(16)}`
    else out += path[i]
  }
  return out
}

/**
 * Checks that `path` is a clean, relative, '/'-separated path that stays inside its tree: no leading '/',
 * no '.', '..' or empty segments, no NUL, names and the whole path within Linux's limits in bytes, and the
 * canonical string of its bytes (escaped bytes only where the bytes are not UTF-8). Backslashes, control
 * characters and bytes that are not UTF-8 are legal in POSIX names and are kept. Returns it unchanged.
 * A manifest or peer that sends anything else is hostile or broken; we never "normalise" it into something
 * else, because two different wire paths must never land on the same file.
 */
export function validateRelativePath (path: unknown): string {
  if (typeof path !== 'string') throw new InvalidPathError(String(path), 'not a string')
  if (path.length === 0) throw new InvalidPathError(path, 'empty')
  let bytes: Buffer | undefined
  if (LONE_SURROGATE.test(path)) {
    bytes = pathToBytes(path)
    if (bytesToPath(bytes) !== path) throw new InvalidPathError(path, 'escaped bytes that are valid UTF-8 (not the canonical form of its bytes)')
  }
  const byteLength = (s: string): number => bytes === undefined ? Buffer.byteLength(s, 'utf8') : pathToBytes(s).length
  // a UTF-16 code unit is at most 3 UTF-8 bytes: only a long string needs its bytes counted
  if (path.length * 3 > MAX_PATH_BYTES && byteLength(path) > MAX_PATH_BYTES) throw new InvalidPathError(path, `longer than ${MAX_PATH_BYTES} bytes`)
  if (path.charCodeAt(0) === 0x2f) throw new InvalidPathError(path, 'absolute')
  if (path.includes('\0')) throw new InvalidPathError(path, 'contains NUL')
  // segments walked in place (no split: this runs for every entry of every manifest read)
  for (let start = 0; start <= path.length;) {
    let end = path.indexOf('/', start)
    if (end === -1) end = path.length
    const length = end - start
    if (length === 0) throw new InvalidPathError(path, 'empty segment')
    if (length <= 2 && path.charCodeAt(start) === 0x2e && (length === 1 || path.charCodeAt(start + 1) === 0x2e)) {
      throw new InvalidPathError(path, `'${path.slice(start, end)}' segment`)
    }
    if (length * 3 > MAX_NAME_BYTES && byteLength(path.slice(start, end)) > MAX_NAME_BYTES) {
      throw new InvalidPathError(path, `a segment is longer than ${MAX_NAME_BYTES} bytes`)
    }
    start = end + 1
  }
  return path
}

/** Parent directory of a relative path, or '' for a top-level name. */
export function parentOf (path: string): string {
  const slash = path.lastIndexOf('/')
  return slash === -1 ? '' : path.slice(0, slash)
}

/**
 * Canonical manifest order: component-wise, each component compared as UTF-8 bytes.
 * This is the order of a depth-first walk that visits each directory's names sorted by bytes,
 * so a scanner can emit entries in order without holding the whole tree, and a directory
 * always sorts before everything under it.
 */
export function comparePaths (a: string, b: string): number {
  // Below U+D800 a UTF-16 code unit is its code point, and UTF-8 keeps code point order: the first differing
  // unit decides, with '/' as NUL. A surrogate or a unit above them (whose UTF-16 order differs from
  // UTF-8's) leaves it to the bytes. Most paths never get there, and no buffer is made for them.
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i)
    let y = b.charCodeAt(i)
    if (x === y) continue
    if (x >= 0xd800 || y >= 0xd800) return Buffer.compare(sortKey(a), sortKey(b))
    if (x === 0x2f) x = 0
    if (y === 0x2f) y = 0
    if (x !== y) return x < y ? -1 : 1
  }
  if (a.length === b.length) return 0
  // one is a prefix of the other, so are its bytes — unless it ends in the high half of a surrogate pair
  // (which no canonical path does, but the bytes decide whatever we are given)
  const last = Math.min(a.length, b.length) - 1
  if (last >= 0 && a.charCodeAt(last) >= 0xd800) return Buffer.compare(sortKey(a), sortKey(b))
  return a.length < b.length ? -1 : 1
}

/** '/' → NUL makes plain byte order equal component-wise order (NUL never occurs in a valid path). */
export function sortKey (path: string): Buffer {
  const bytes = pathToBytes(path)
  for (let i = 0; i < bytes.length; i++) if (bytes[i] === 0x2f) bytes[i] = 0
  return bytes
}

/** Tree names: 'rhel-10/compose/BaseOS' — segments of [A-Za-z0-9._-], not '.' or '..'. */
export function validateTreeName (tree: unknown): string {
  if (typeof tree !== 'string') throw new InvalidTreeNameError(String(tree), 'not a string')
  if (tree.length === 0) throw new InvalidTreeNameError(tree, 'empty')
  if (tree.length > MAX_TREE_NAME_BYTES) throw new InvalidTreeNameError(tree, `longer than ${MAX_TREE_NAME_BYTES} characters`)
  for (const segment of tree.split('/')) {
    if (!/^[A-Za-z0-9._-]+$/.test(segment)) throw new InvalidTreeNameError(tree, 'segments must be non-empty and use only A-Z a-z 0-9 . _ -')
    if (segment === '.' || segment === '..') throw new InvalidTreeNameError(tree, `'${segment}' segment`)
  }
  return tree
}

/** A tree name as one filesystem-safe directory name ('/' is not allowed in names; '%' is not allowed in tree names). */
export function treeDirName (tree: string): string {
  return validateTreeName(tree).replaceAll('/', '%')
}
