// The site's libp2p identity key, apart from node.ts so that commands needing only the peer id
// (init, peers) do not load the whole libp2p stack.
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'

/**
 * Loads the node's ed25519 identity from `path` (libp2p protobuf encoding), creating it with mode 0600
 * when the file does not exist. The peer id is derived from this key, so it must survive restarts.
 */
export async function loadOrCreatePeerKey (path: string): Promise<PrivateKey> {
  let bytes: Uint8Array | undefined
  try {
    bytes = await readFile(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  if (bytes !== undefined) return privateKeyFromProtobuf(bytes)
  const key = await generateKeyPair('Ed25519')
  await mkdir(dirname(path), { recursive: true, mode: 0o700 })
  const tmp = `${path}.tmp-${process.pid}`
  await writeFile(tmp, privateKeyToProtobuf(key), { mode: 0o600, flag: 'wx' })
  await chmod(tmp, 0o600)
  await rename(tmp, path)
  return key
}
