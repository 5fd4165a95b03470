import { createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { rawPublicKeyOf, formatPublisherKey } from '../../protocol/envelope.js'

/** The site's ed25519 publisher key: signs the versions this site publishes. Created once by `init`. */
export async function createPublisherKey (path: string): Promise<KeyObject> {
  const { privateKey } = generateKeyPairSync('ed25519')
  await mkdir(dirname(path), { recursive: true, mode: 0o700 })
  await writeFile(path, privateKey.export({ format: 'pem', type: 'pkcs8' }), { flag: 'wx', mode: 0o600 })
  return privateKey
}

export async function loadPublisherKey (path: string): Promise<KeyObject> {
  try {
    return createPrivateKey(await readFile(path))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new Error(`No publisher key at ${path}: run \`deltamesh init --home DIR\` first`)
    throw err
  }
}

export function publisherKeyText (key: KeyObject): string {
  return formatPublisherKey(rawPublicKeyOf(key))
}
