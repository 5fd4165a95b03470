import { execFile } from 'node:child_process'
import { chmod, lstat, mkdir, readdir, readFile, stat } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { promisify } from 'node:util'
import { DeltameshError } from '../../protocol/errors.js'
import { parseVersionName, type HomeLayout } from '../core/home.js'
import type { Logger } from '../core/log.js'
import { errnoOf, lstatOrUndefined, openDir, STAGING_DIR_MODE } from './fs-safe.js'

// Who may read the materialized versions ([mirror] in config.toml). A mirror exists to be served by httpd or
// nginx, which run as another user; the keys, the database, the config and the control socket must stay the
// agent's. Layout and modes (docs/design-notes.md, "Serving a mirror"):
//
//   HOME                0711 (traversable, not listable)   0700 when mode = "private"
//     everything but trees/   owner only (identity/, db/ 0700; config.toml, limits.json, control.sock 0600)
//     trees/            the gate: 0755 (world), 0750 with [mirror] group (group), 0700 (private)
//       <tree>/         0755            versions/ 0755      versions/<seq>/ 0755 (then the manifest's modes)
//       <tree>/staging/ 0700: a version being built is never reachable, whatever its own modes
//
// One gate decides who gets in: every directory below it is traversable, and files keep the modes their
// manifest gives them (as an rsync mirror does) — never changed per file, so hardlinks shared between
// versions and with a seed are left alone and setuid/setgid bits are never widened nor cleared.

export type MirrorMode = 'world' | 'group' | 'private'

export interface MirrorAccess {
  mode: MirrorMode
  /** Required with mode = "group": a group name or a numeric gid. */
  group?: string
}

export const HOME_MODES: Record<MirrorMode, number> = { world: 0o711, group: 0o711, private: 0o700 }
export const TREES_MODES: Record<MirrorMode, number> = { world: 0o755, group: 0o750, private: 0o700 }
/** Directories between the gate and a version's root: traversable; the gate above decides who gets this far. */
export const TREE_DIR_MODE = 0o755

/** [mirror] could not be applied: an unknown group, or one the agent's user may not give its files. */
export class MirrorAccessError extends DeltameshError {
  static override name = 'MirrorAccessError'
  constructor (message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'MirrorAccessError'
  }
}

export interface MirrorAccessResult {
  /** Paths whose mode (or group) was changed, with what they became. */
  changed: Array<{ path: string, mode: string }>
  /** Directories above HOME that the readers cannot traverse: the mirror is not servable until they can. */
  blocked: string[]
}

/** A numeric gid, else the group's entry from `getent group` (NSS: /etc/group, LDAP…), else /etc/group. */
export async function resolveGroup (group: string): Promise<number> {
  if (/^\d+$/.test(group)) return Number(group)
  let line: string | undefined
  try {
    const { stdout } = await promisify(execFile)('getent', ['group', group], { timeout: 10_000 })
    line = stdout.split('\n')[0]
  } catch (err) {
    // getent exits 2 for an unknown group; absent (ENOENT), read the file ourselves
    if (errnoOf(err) === 'ENOENT') line = (await readFile('/etc/group', 'utf8').catch(() => '')).split('\n').find(l => l.startsWith(`${group}:`))
  }
  const gid = line === undefined ? NaN : Number(line.split(':')[2])
  if (!Number.isInteger(gid)) throw new MirrorAccessError(`[mirror] group = ${JSON.stringify(group)}: no such group on this host (getent group ${group})`)
  return gid
}

/**
 * Sets the modes above at agent start, from scratch each time: a home made by an older agent (0700, a umask
 * of 027 on the tree dirs) or a [mirror] changed since is fixed without the operator doing anything. The
 * private entries are closed before HOME opens. Idempotent; a mode already right is not touched.
 */
export async function applyMirrorAccess (home: HomeLayout, access: MirrorAccess, log?: Logger): Promise<MirrorAccessResult> {
  const result: MirrorAccessResult = { changed: [], blocked: [] }
  const gid = access.mode === 'group' ? await resolveGroup(access.group ?? '') : undefined
  const uid = process.getuid?.()
  // the database is opened after this (LevelDB would create it 0755 on a first start): made private first
  await mkdir(home.db, { mode: 0o700 }).catch((err: unknown) => { if (errnoOf(err) !== 'EEXIST') throw err })
  for (const name of await readdir(home.root)) {
    if (name === 'trees') continue
    const path = join(home.root, name)
    const st = await lstatOrUndefined(path)
    // chmod follows symlinks; and never touch what another user put here
    if (st === undefined || st.isSymbolicLink() || (uid !== undefined && st.uid !== uid)) continue
    const mode = st.mode & 0o7777
    if ((mode & 0o077) !== 0) await setMode(path, mode & ~0o077, result)
  }
  await mkdir(home.trees, { recursive: true, mode: TREES_MODES[access.mode] })
  if (gid !== undefined) {
    // the group first: chown may clear set-id bits, so the mode comes after it
    const st = await lstat(home.trees)
    if (st.gid !== gid) {
      await chgrp(home.trees, gid, access.group ?? String(gid))
      result.changed.push({ path: home.trees, mode: `group ${access.group ?? gid}` })
    }
  }
  await setMode(home.trees, TREES_MODES[access.mode], result)
  for (const name of await readdir(home.trees)) {
    const treeDir = join(home.trees, name)
    if ((await lstatOrUndefined(treeDir))?.isDirectory() !== true) continue
    await openPath(treeDir, result)
    const versions = join(treeDir, 'versions')
    if ((await lstatOrUndefined(versions))?.isDirectory() === true) {
      await setMode(versions, TREE_DIR_MODE, result)
      for (const seq of await readdir(versions)) {
        const dir = join(versions, seq)
        if (parseVersionName(seq) !== undefined && (await lstatOrUndefined(dir))?.isDirectory() === true) await setMode(dir, TREE_DIR_MODE, result)
      }
    }
  }
  await setMode(home.root, HOME_MODES[access.mode], result)
  if (access.mode !== 'private') result.blocked = await blockedAncestors(home.root, gid)
  if (result.changed.length > 0) log?.info({ mirror: access.mode, group: access.group, changed: result.changed }, 'home modes set for [mirror]')
  if (result.blocked.length > 0) {
    log?.warn({ blocked: result.blocked, mirror: access.mode }, `versions under ${home.trees} are not readable by other users: ${result.blocked.join(', ')} ${result.blocked.length === 1 ? 'is' : 'are'} not traversable (chmod o+x)`)
  }
  return result
}

/**
 * A tree's directory and its versions/ traversable, its staging/ private, whatever the umask; at agent start
 * and whenever a version is installed (a tree's first version creates them).
 */
export async function openTreePath (home: HomeLayout, tree: string): Promise<void> {
  await openPath(home.treeDir(tree))
  await setMode(home.versionsDir(tree), TREE_DIR_MODE)
}

async function openPath (treeDir: string, result?: MirrorAccessResult): Promise<void> {
  await setMode(treeDir, TREE_DIR_MODE, result)
  const staging = join(treeDir, 'staging')
  if ((await lstatOrUndefined(staging))?.isDirectory() === true) await setMode(staging, STAGING_DIR_MODE, result)
}

/** chmod through an O_NOFOLLOW handle for directories (a path swapped for a symlink is refused), by path otherwise. */
async function setMode (path: string, mode: number, result?: MirrorAccessResult): Promise<void> {
  const st = await lstat(path)
  if ((st.mode & 0o7777) === mode) return
  if (st.isDirectory()) {
    const handle = await openDir(path)
    try { await handle.chmod(mode) } finally { await handle.close() }
  } else {
    await chmod(path, mode)
  }
  result?.changed.push({ path, mode: mode.toString(8).padStart(4, '0') })
}

async function chgrp (path: string, gid: number, name: string): Promise<void> {
  const handle = await openDir(path)
  try {
    await handle.chown(-1, gid)
  } catch (err) {
    if (errnoOf(err) === 'EPERM') {
      throw new MirrorAccessError(`[mirror] group = ${JSON.stringify(name)}: the agent's user is not a member of that group, so it cannot give ${path} to it (add it: usermod -aG ${name} <user>, or SupplementaryGroups=${name} in the systemd unit)`, { cause: err })
    }
    throw err
  } finally {
    await handle.close()
  }
}

/** Ancestors of `dir` a reader other than the owner cannot traverse (o+x, or g+x with the mirror's group). */
async function blockedAncestors (dir: string, gid: number | undefined): Promise<string[]> {
  const out: string[] = []
  for (let at = dirname(dir); ; at = dirname(at)) {
    const st = await stat(at).catch(() => undefined)
    if (st !== undefined && (st.mode & 0o001) === 0 && !(gid !== undefined && st.gid === gid && (st.mode & 0o010) !== 0)) out.push(at)
    if (dirname(at) === at) break
  }
  return out.reverse()
}
