import { join, resolve } from 'node:path'
import { treeDirName } from '../../protocol/paths.js'

/**
 * Layout of an agent's home directory. Everything an agent owns lives here; versions and staging share
 * one filesystem with each other so that renames are atomic and hardlinks work.
 *
 *   config.toml               operator configuration (commented)
 *   limits.json               bandwidth limits changed at runtime (`deltamesh limit`), over config.toml
 *   identity/peer.key         libp2p private key (protobuf)
 *   identity/publisher.pem    ed25519 publisher private key (PKCS#8 PEM)
 *   db/                       LevelDB: chunk index, catalog, state
 *   trees/<tree>/versions/<seq>/   materialized versions (<seq>.<generation>: rebuilt for a changed filter)
 *   trees/<tree>/staging/<seq>/    versions being built (never visible to readers)
 *   trees/<tree>/current      symlink → versions/<seq>, flipped atomically
 *   trees/<tree>/changes/     what changed in a version, for its gate and post-version commands (DELTAMESH_CHANGES)
 *   control.sock              local control API (unix socket, mode 0600)
 */
export class HomeLayout {
  readonly root: string

  constructor (home: string) {
    this.root = resolve(home)
  }

  get config (): string { return join(this.root, 'config.toml') }
  get limitOverrides (): string { return join(this.root, 'limits.json') }
  get identityDir (): string { return join(this.root, 'identity') }
  get peerKey (): string { return join(this.root, 'identity', 'peer.key') }
  get publisherKey (): string { return join(this.root, 'identity', 'publisher.pem') }
  get db (): string { return join(this.root, 'db') }
  get controlSocket (): string { return join(this.root, 'control.sock') }
  get pidFile (): string { return join(this.root, 'agent.pid') }
  get trees (): string { return join(this.root, 'trees') }

  treeDir (tree: string): string { return join(this.root, 'trees', treeDirName(tree)) }
  versionsDir (tree: string): string { return join(this.treeDir(tree), 'versions') }
  /** A version's directory; generation > 0: the same version rebuilt for a changed subscription filter. */
  versionDir (tree: string, seq: number, generation = 0): string { return join(this.versionsDir(tree), versionName(seq, generation)) }
  stagingDir (tree: string, seq: number, generation = 0): string { return join(this.treeDir(tree), 'staging', versionName(seq, generation)) }
  currentLink (tree: string): string { return join(this.treeDir(tree), 'current') }
  changesDir (tree: string): string { return join(this.treeDir(tree), 'changes') }
}

/**
 * The name of a version's directory (and of its staging directory): `<seq>`, or `<seq>.<generation>` for the
 * same version materialized again under a changed filter (a new name, so the flip stays atomic).
 */
export function versionName (seq: number, generation = 0): string {
  return generation === 0 ? String(seq) : `${seq}.${generation}`
}

/** The inverse of versionName; undefined for any other name. */
export function parseVersionName (name: string): { seq: number, generation: number } | undefined {
  const m = /^([1-9][0-9]{0,15})(?:\.([1-9][0-9]{0,8}))?$/.exec(name)
  if (m === null) return undefined
  return { seq: Number(m[1]), generation: m[2] === undefined ? 0 : Number(m[2]) }
}

/** --home, else $DELTAMESH_HOME; a clear error when neither is given. */
export function resolveHome (home: string | undefined, env: NodeJS.ProcessEnv = process.env): HomeLayout {
  const chosen = home ?? env.DELTAMESH_HOME
  if (chosen === undefined || chosen === '') throw new Error('No agent home: pass --home DIR or set DELTAMESH_HOME')
  return new HomeLayout(chosen)
}
