import { chmod, lstat, mkdir, readdir, utimes, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'

/** Makes a tree writable again (versions are installed read-only where the manifest says so) so rm can remove it. */
export async function makeWritable (dir: string): Promise<void> {
  const st = await lstat(dir).catch(() => undefined)
  if (st?.isDirectory() !== true) return
  await chmod(dir, 0o755)
  for (const name of await readdir(dir)) await makeWritable(join(dir, name))
}

/**
 * utimes seconds for an mtime in ms: +0.1 ms, because the exact millisecond can read back one short
 * after the double rounding through seconds.
 */
export const when = (ms: number): number => (ms + 0.1) / 1000

/** Writes a file with its parents, a mode and an mtime. */
export async function put (path: string, bytes: Uint8Array | string, mode: number, mtimeMs: number): Promise<void> {
  await mkdir(dirname(path), { recursive: true })
  await writeFile(path, bytes)
  await chmod(path, mode)
  await utimes(path, when(mtimeMs), when(mtimeMs))
}
