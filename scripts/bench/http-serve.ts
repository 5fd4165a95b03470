// A static file server on 127.0.0.1 for the incumbents that fetch over HTTP (casync's chunk store, zsync's
// .zsync and image). It runs as a process of its own so its CPU and RSS are the origin's, and it counts every
// byte it writes (headers included): `GET /__bench/stats` answers {bytes, requests} and is not counted.
// Ranges: zsync asks for many ranges per request, so multipart/byteranges is supported.
// Run: node dist/scripts/bench/http-serve.js ROOT  (prints the port on stdout)
import { createReadStream, statSync } from 'node:fs'
import { createServer, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { resolve, sep } from 'node:path'

const root = resolve(process.argv[2] ?? '.')
let requests = 0

/** Every byte written on every socket, headers included, also on a connection the client drops mid-response. */
const sockets = new Set<Socket>()
let closedBytes = 0
const written = (): number => closedBytes + [...sockets].reduce((n, so) => n + so.bytesWritten, 0)

type Range = [number, number]

function parseRanges (header: string, size: number): Range[] | undefined {
  const m = /^bytes=(.+)$/.exec(header)
  if (m === null) return undefined
  const out: Range[] = []
  for (const part of (m[1] as string).split(',')) {
    const r = /^\s*(\d*)-(\d*)\s*$/.exec(part)
    if (r === null) return undefined
    let start: number
    let end: number
    if (r[1] === '') { start = Math.max(0, size - Number(r[2])); end = size - 1 } else { start = Number(r[1]); end = r[2] === '' ? size - 1 : Math.min(Number(r[2]), size - 1) }
    if (start > end || start >= size) return undefined
    out.push([start, end])
  }
  return out
}

async function pipeRange (res: ServerResponse, file: string, [start, end]: Range): Promise<void> {
  await new Promise<void>((done, fail) => {
    const s = createReadStream(file, { start, end })
    s.on('error', fail)
    s.on('end', done)
    s.pipe(res, { end: false })
  })
}

const server = createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://127.0.0.1')
  if (url.pathname === '/__bench/stats') { const before = res.socket?.bytesWritten ?? 0; const bytes = written() - before; res.end(JSON.stringify({ bytes, requests })); return }
  requests++
  const file = resolve(root, '.' + decodeURIComponent(url.pathname))
  let size: number
  try {
    if (!file.startsWith(root + sep)) throw new Error('outside')
    const st = statSync(file)
    if (!st.isFile()) throw new Error('not a file')
    size = st.size
  } catch {
    res.statusCode = 404
    res.end()
    return
  }
  const ranges = req.headers.range === undefined ? undefined : parseRanges(req.headers.range, size)
  void (async () => {
    if (ranges === undefined) {
      res.writeHead(200, { 'content-length': size, 'accept-ranges': 'bytes' })
      await pipeRange(res, file, [0, size - 1])
    } else if (ranges.length === 1) {
      const [start, end] = ranges[0] as Range
      res.writeHead(206, { 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${size}` })
      await pipeRange(res, file, [start, end])
    } else {
      const boundary = 'deltamesh-bench-boundary'
      const heads = ranges.map(([s, e]) => `\r\n--${boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes ${s}-${e}/${size}\r\n\r\n`)
      const tail = `\r\n--${boundary}--\r\n`
      const length = heads.reduce((n, h, i) => n + Buffer.byteLength(h) + (ranges[i] as Range)[1] - (ranges[i] as Range)[0] + 1, 0) + tail.length
      res.writeHead(206, { 'content-type': `multipart/byteranges; boundary=${boundary}`, 'content-length': length })
      for (const [i, h] of heads.entries()) { res.write(h); await pipeRange(res, file, ranges[i] as Range) }
      res.write(tail)
    }
    res.end()
  })().catch((err: unknown) => { console.error(err); res.destroy() })
})
server.on('connection', (so: Socket) => { sockets.add(so); so.once('close', () => { closedBytes += so.bytesWritten; sockets.delete(so) }) })
server.listen(0, '127.0.0.1', () => {
  const a = server.address()
  console.log(typeof a === 'object' && a !== null ? a.port : 0)
})
process.on('SIGTERM', () => { server.close(); process.exit(0) })
