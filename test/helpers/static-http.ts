import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join, normalize, sep } from 'node:path'

// A small static HTTP server (what nginx does for a real mirror): GET of a file under `root`, following the
// symlink a subscription path is. Every request path is recorded, so a test can tell which mirror served what.

export interface StaticServer {
  /** http://127.0.0.1:PORT */
  url: string
  /** Decoded request paths, in order, with the status answered. */
  requests: Array<{ path: string, status: number }>
  close: () => Promise<void>
}

/** Serves `root` at URL path `prefix` (e.g. '/mirror/x86_64'); anything outside it is 404. */
export async function startStaticServer (root: string, prefix = ''): Promise<StaticServer> {
  const requests: StaticServer['requests'] = []
  const server: Server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname)
    const done = (status: number): void => { requests.push({ path, status }) }
    if (!path.startsWith(prefix + '/')) { res.writeHead(404).end(); done(404); return }
    const file = normalize(join(root, path.slice(prefix.length)))
    if (!file.startsWith(root + sep)) { res.writeHead(403).end(); done(403); return }
    stat(file).then(st => {
      if (!st.isFile()) { res.writeHead(404).end(); done(404); return }
      res.writeHead(200, { 'content-length': st.size, 'content-type': 'application/octet-stream' })
      if (req.method === 'HEAD') { res.end(); done(200); return }
      createReadStream(file).pipe(res)
      done(200)
    }, () => { res.writeHead(404).end(); done(404) })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    close: async () => { await new Promise<void>(resolve => { server.close(() => resolve()); server.closeAllConnections() }) },
  }
}
