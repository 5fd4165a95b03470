// Sends this site's status on the status topic every interval, and feeds what peers send into the view.
import { InvalidMessageError } from '../../protocol/errors.js'
import { encodeSiteStatus, type SiteStatus } from '../../protocol/site-status.js'
import type { Logger } from '../log.js'
import type { IngestResult, NetworkView } from './network-view.js'

export interface StatusGossipComponents {
  view: NetworkView
  log: Logger
  /** This site's status as it should go out now. */
  localStatus: () => Promise<SiteStatus>
  /** Publishes on the status topic; resolves to the number of peers it went to. */
  publish: (bytes: Uint8Array) => Promise<number>
  /** Every received status, with what was done with it (metrics). */
  onResult?: (result: IngestResult | 'invalid') => void
}

export interface StatusGossipInit {
  intervalMs: number
}

export class StatusGossip {
  private timer: ReturnType<typeof setInterval> | undefined
  private sending = false
  /** Size of the last status sent (reported in logs and tests: it should stay a few hundred bytes). */
  lastSentBytes = 0

  constructor (private readonly components: StatusGossipComponents, private readonly init: StatusGossipInit) {}

  start (): void {
    if (this.timer !== undefined) return
    this.timer = setInterval(() => { this.sendNow() }, this.init.intervalMs)
    this.timer.unref()
    this.sendNow()
  }

  stop (): void {
    clearInterval(this.timer)
    this.timer = undefined
  }

  /** Sends one status unless one is still being sent (a slow status() must not pile up sends). */
  sendNow (): void {
    if (this.sending) return
    this.sending = true
    this.send()
      .catch(err => this.components.log.debug({ err }, 'status not sent'))
      .finally(() => { this.sending = false })
  }

  private async send (): Promise<void> {
    const bytes = encodeSiteStatus(await this.components.localStatus())
    this.lastSentBytes = bytes.byteLength
    await this.components.publish(bytes)
  }

  /** A status from `origin` (the gossipsub signer; undefined for an unsigned message, which is ignored). */
  receive (bytes: Uint8Array, origin: string | undefined): void {
    if (origin === undefined) { this.components.onResult?.('invalid'); return }
    try {
      this.components.onResult?.(this.components.view.ingest(origin, bytes))
    } catch (err) {
      // Not a strike: a status is informational, and a site running a newer format version must not get
      // itself disconnected from older ones. It is simply not shown.
      if (!(err instanceof InvalidMessageError)) throw err
      this.components.onResult?.('invalid')
      this.components.log.debug({ peer: origin, err }, 'ignoring undecodable status')
    }
  }
}
