// The subscriber whose disk fills: its home is a tmpfs of its own, shrunk to what it holds plus a little,
// then given room again. Needs root (mount); when mount is refused the soak says so and runs without it.
import { execFile } from 'node:child_process'
import { mkdir, statfs } from 'node:fs/promises'
import { promisify } from 'node:util'

const run = promisify(execFile)
const MIB = 1024 * 1024

/** Mounts a tmpfs of `sizeMiB` at dir; the reason when that is not possible here. */
export async function mountTmpfs (dir: string, sizeMiB: number): Promise<string | undefined> {
  await mkdir(dir, { recursive: true })
  try {
    await run('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m,mode=0700`, 'tmpfs', dir])
    return undefined
  } catch (err) {
    return ((err as { stderr?: string }).stderr ?? (err as Error).message).trim()
  }
}

/** Bytes in use on the filesystem at dir. */
export async function usedBytes (dir: string): Promise<number> {
  const s = await statfs(dir)
  return (s.blocks - s.bfree) * s.bsize
}

/** Changes the tmpfs's size (a tmpfs can be shrunk down to what it holds). */
export async function resizeTmpfs (dir: string, sizeKiB: number): Promise<void> {
  await run('mount', ['-o', `remount,size=${sizeKiB}k`, dir])
}

/**
 * Shrinks the tmpfs to what it holds plus about `marginKiB` (more when files come and go meanwhile and the
 * kernel refuses a size below its use); returns the size set, in KiB.
 */
export async function shrinkToUse (dir: string, marginKiB: number): Promise<number> {
  let lastError: unknown
  for (let margin = marginKiB; margin <= 64 * marginKiB; margin *= 2) {
    const size = Math.ceil(await usedBytes(dir) / 1024) + margin
    try { await resizeTmpfs(dir, size); return size } catch (err) { lastError = err }
  }
  throw lastError
}

export async function unmount (dir: string): Promise<void> {
  await run('umount', [dir]).catch(async () => await run('umount', ['-l', dir]).catch(() => {}))
}

export function mib (bytes: number): number { return bytes / MIB }
