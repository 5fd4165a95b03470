// Codec choice for wire compression (issue 6): ratio and CPU of node:zlib brotli and deflate on batches of
// 256 KiB of real files — source-like text, shared libraries, and already-compressed Debian packages — plus
// how fast the sample test rejects incompressible data. Run: npx tsx scripts/bench-codec.ts [DIR…]
import { readdir, readFile, lstat } from 'node:fs/promises'
import { join } from 'node:path'
import { brotliCompressSync, brotliDecompressSync, constants, deflateRawSync, inflateRawSync } from 'node:zlib'

const BATCH = 256 * 1024
const LIMIT = 48 * 1024 * 1024

async function collect (dir: string, out: Buffer[], state: { bytes: number }): Promise<void> {
  let names: string[]
  try { names = (await readdir(dir)).sort() } catch { return }
  for (const n of names) {
    if (state.bytes >= LIMIT) return
    const p = join(dir, n)
    const st = await lstat(p)
    if (st.isDirectory()) await collect(p, out, state)
    else if (st.isFile() && st.size > 0) { const b = await readFile(p); out.push(b); state.bytes += b.byteLength }
  }
}

function batches (files: Buffer[]): Buffer[] {
  const all = Buffer.concat(files).subarray(0, LIMIT)
  const out: Buffer[] = []
  for (let o = 0; o < all.byteLength; o += BATCH) out.push(all.subarray(o, o + BATCH))
  return out
}

const codecs: Array<[string, (b: Buffer) => Buffer, (b: Buffer, n: number) => Buffer]> = [
  ['deflate-1', b => deflateRawSync(b, { level: 1 }), (b, n) => inflateRawSync(b, { maxOutputLength: n })],
  ['deflate-6', b => deflateRawSync(b, { level: 6 }), (b, n) => inflateRawSync(b, { maxOutputLength: n })],
  ...[1, 3, 4, 5, 6].map((q): [string, (b: Buffer) => Buffer, (b: Buffer, n: number) => Buffer] => [`brotli-${q}`,
    b => brotliCompressSync(b, { params: { [constants.BROTLI_PARAM_QUALITY]: q, [constants.BROTLI_PARAM_LGWIN]: 20, [constants.BROTLI_PARAM_SIZE_HINT]: b.byteLength } }),
    (b, n) => brotliDecompressSync(b, { maxOutputLength: n })]),
]

const corpora = process.argv.length > 2 ? process.argv.slice(2) : ['/usr/include', '/usr/lib/x86_64-linux-gnu', '/var/cache/apt/archives']
console.log('| corpus | codec | ratio | compress MB/s | decompress MB/s |\n| --- | --- | ---: | ---: | ---: |')
for (const dir of corpora) {
  const files: Buffer[] = []
  await collect(dir, files, { bytes: 0 })
  const bs = batches(files)
  const raw = bs.reduce((n, b) => n + b.byteLength, 0)
  for (const [name, c, d] of codecs) {
    let t = process.hrtime.bigint()
    const packed = bs.map(c)
    const ct = Number(process.hrtime.bigint() - t) / 1e9
    t = process.hrtime.bigint()
    packed.forEach((p, i) => d(p, (bs[i] as Buffer).byteLength))
    const dt = Number(process.hrtime.bigint() - t) / 1e9
    const size = packed.reduce((n, b) => n + b.byteLength, 0)
    console.log(`| ${dir} (${(raw / 1e6).toFixed(1)} MB) | ${name} | ${(size / raw).toFixed(3)} | ${(raw / 1e6 / ct).toFixed(0)} | ${(raw / 1e6 / dt).toFixed(0)} |`)
  }
}
