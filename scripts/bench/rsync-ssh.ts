// bench:wire (c), rsync over ssh: Debian's OpenSSH server started by the bench on 127.0.0.1 (a free port) with
// a throwaway ed25519 host key and user key made by ssh-keygen in a temp dir, its own sshd_config there, and
// clients that read no ssh configuration of the machine's or the user's (-F /dev/null, known hosts in the temp
// dir). Nothing under /etc/ssh or ~/.ssh is read or written. Running as root, sshd insists on its privilege
// separation directory /run/sshd (Debian's service creates it at start): when missing it is made here and
// removed again by stop().
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises'
import { userInfo } from 'node:os'
import { join } from 'node:path'
import { freePort } from '../../agent/demo/local-cluster.js'
import { statNumber, waitListening } from './incumbents.js'
import { childrenOf, cpuOf, run, runOk, RssSampler, sleep, track } from './proc.js'

const SSHD = '/usr/sbin/sshd'
const PRIVSEP_DIR = '/run/sshd'
const TOOLS = [SSHD, '/usr/bin/ssh', '/usr/bin/ssh-keygen', '/usr/bin/rsync']

/** Installs openssh-server, openssh-client and rsync with scripts/setup-debian.sh of `repo` when one is missing. */
export function ensureSshTools (repo: string): void {
  if (TOOLS.every(t => existsSync(t))) return
  const script = join(repo, 'scripts', 'setup-debian.sh')
  console.log(`bench:wire needs ${TOOLS.filter(t => !existsSync(t)).join(', ')}; running ${script} openssh-server openssh-client rsync …`)
  const r = spawnSync('sh', [script, 'openssh-server', 'openssh-client', 'rsync'], { stdio: 'inherit' })
  if (r.status !== 0 || !TOOLS.every(t => existsSync(t))) throw new Error(`bench:wire needs OpenSSH and rsync from Debian: run \`sudo sh ${script} --bench\``)
}

export interface SshServer {
  port: number
  pid: number
  /** rsync's -e: ssh with the throwaway key and known-hosts file, nothing else of the machine's configuration. */
  rsh: string
  /** user@127.0.0.1 */
  remote: string
  /** What ssh negotiated, from `ssh -v` (e.g. "chacha20-poly1305@openssh.com"). */
  cipher: string
  version: string
  stop: () => Promise<void>
}

export async function startSshd (dir: string): Promise<SshServer> {
  const hostKey = join(dir, 'ssh_host_ed25519_key')
  const userKey = join(dir, 'id_ed25519')
  await runOk('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'bench-wire-host', '-f', hostKey])
  await runOk('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'bench-wire-user', '-f', userKey])
  await writeFile(join(dir, 'authorized_keys'), await readFile(`${userKey}.pub`), { mode: 0o600 })
  const port = await freePort()
  await writeFile(join(dir, 'known_hosts'), `[127.0.0.1]:${port} ${(await readFile(`${hostKey}.pub`, 'utf8')).trim()}\n`)
  const config = join(dir, 'sshd_config')
  await writeFile(config, [
    `Port ${port}`, 'ListenAddress 127.0.0.1', `HostKey ${hostKey}`, `PidFile ${join(dir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
    // the temp dir's owner and modes are not what StrictModes wants of a home directory
    'StrictModes no', 'UsePAM no', 'PubkeyAuthentication yes', 'PasswordAuthentication no', 'KbdInteractiveAuthentication no',
    'PermitRootLogin prohibit-password', 'PrintMotd no', 'PrintLastLog no', 'UseDNS no', 'X11Forwarding no', 'AllowTcpForwarding no', '',
  ].join('\n'))
  const madePrivsep = process.getuid?.() === 0 && !existsSync(PRIVSEP_DIR)
  if (madePrivsep) await mkdir(PRIVSEP_DIR, { mode: 0o755 })
  const removePrivsep = async (): Promise<void> => { if (madePrivsep) await rmdir(PRIVSEP_DIR).catch(() => {}) }
  let child: ChildProcess
  try {
    child = track(spawn(SSHD, ['-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] }))
    let stderr = ''
    child.stderr?.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-20_000) })
    await waitListening(port, child, 'sshd').catch((err: Error) => { throw new Error(`${err.message}: ${stderr}`) })
  } catch (err) {
    await removePrivsep()
    throw err
  }
  const rsh = ['ssh', '-F', '/dev/null', '-i', userKey, '-p', String(port), '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes',
    '-o', `UserKnownHostsFile=${join(dir, 'known_hosts')}`, '-o', 'GlobalKnownHostsFile=/dev/null', '-o', 'StrictHostKeyChecking=yes'].join(' ')
  const remote = `${userInfo().username}@127.0.0.1`
  const probe = await run('sh', ['-c', `${rsh} -v ${remote} true`])
  if (probe.code !== 0) throw new Error(`ssh to the bench's sshd failed:\n${probe.stderr.slice(-3000)}`)
  const cipher = /server->client cipher: (\S+)/.exec(probe.stderr)?.[1] ?? '?'
  const version = /Remote protocol version [\d.]+, remote software version (\S+)/.exec(probe.stderr)?.[1] ?? '?'
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>(resolve => child.once('exit', () => resolve()))
      child.kill('SIGTERM')
      await exited
    }
    await removePrivsep()
  }
  return { port, pid: child.pid as number, rsh, remote, cipher, version, stop }
}

export interface RsyncSshRun {
  seconds: number
  /** sshd's session processes (the per-connection sshd, its privilege-separated child, the rsync server). */
  serverCpu: number
  /** The rsync client and everything it forked (ssh, rsync's receiver). */
  clientCpu: number
  serverRssMiB: number
  sent: number
  received: number
}

/** Until the sshd listener has no session left (each reaped: its CPU is then in the listener's cutime). */
async function sessionsEnded (pid: number): Promise<void> {
  const deadline = Date.now() + 10_000
  while (childrenOf(pid).length > 0 && Date.now() < deadline) await sleep(50)
  if (childrenOf(pid).length > 0) throw new Error('an ssh session did not end')
  await sleep(100)
}

/**
 * `rsync -a --stats [extra] -e SSH user@127.0.0.1:source dest/`. Server CPU: the sshd listener's cutime+cstime
 * grows by its session's whole process tree once the per-connection sshd has exited and been reaped (each
 * process in the tree waits for its children); client CPU: this process's own cutime+cstime, which grows by
 * the rsync client's tree when it is reaped (nothing else of ours exits meanwhile).
 */
export async function rsyncOverSsh (server: SshServer, source: string, dest: string, extra: string[]): Promise<RsyncSshRun> {
  await sessionsEnded(server.pid) // the ssh -v probe's session too
  const s0 = cpuOf(server.pid)
  const c0 = cpuOf(process.pid).children
  const rss = new RssSampler(server.pid)
  const t0 = performance.now()
  const r = await run('rsync', ['-a', '--stats', ...extra, '-e', server.rsh, `${server.remote}:${source}`, `${dest}/`])
  const seconds = (performance.now() - t0) / 1000
  const c1 = cpuOf(process.pid).children
  if (r.code !== 0) throw new Error(`rsync over ssh exited ${r.code}: ${r.stderr.slice(-3000)}`)
  await sessionsEnded(server.pid)
  const s1 = cpuOf(server.pid)
  return {
    seconds, serverCpu: (s1.self + s1.children) - (s0.self + s0.children), clientCpu: c1 - c0, serverRssMiB: rss.stop(),
    sent: statNumber(r.stdout, 'Total bytes sent'), received: statNumber(r.stdout, 'Total bytes received'),
  }
}
