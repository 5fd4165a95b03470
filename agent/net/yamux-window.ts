// Yamux window updates at half the window instead of after every data frame.
// @chainsafe/libp2p-yamux 8 answers each data frame it receives (≤ 64 KiB) with a WINDOW_UPDATE as soon as
// its receive window is not full, so a subscriber pulling chunks sent a 12-byte frame — its own Noise
// message, cipher setup and tag, and a socket write — for every ~64 KiB it received, and the sender read and
// decrypted each. Profiled on a first sync, the subscriber's window updates were ~8 % of its main thread.
// Go's yamux (the protocol's reference) sends an update only once half the window has been consumed; this
// does the same. The sender can never stall on it: while no update is sent it still holds more than half
// a window of credit. Updates that carry flags (SYN, ACK: opening a stream) are never held back.
import { StreamState, YamuxStream } from '@chainsafe/libp2p-yamux/stream'

/** The fields of a stream this reads (private in the typings). */
interface WindowState { state: StreamState, recvWindow: number, recvWindowCapacity: number }

let installed = false

/** Whether an update may wait: no flags are due and more than half of the window is still open. */
export function updateMayWait (stream: WindowState): boolean {
  const flagsDue = stream.state === StreamState.Init || stream.state === StreamState.SYNReceived
  return !flagsDue && stream.recvWindowCapacity * 2 > stream.recvWindow
}

/**
 * Patches YamuxStream once per process. Returns whether the patch is in place: a yamux release without
 * sendWindowUpdate (or these fields) is left as it is (correct, only chattier).
 */
export function halfWindowUpdates (): boolean {
  if (installed) return true
  const proto = YamuxStream.prototype as unknown as { sendWindowUpdate?: () => void }
  const original = proto.sendWindowUpdate
  if (typeof original !== 'function') return false
  proto.sendWindowUpdate = function (this: WindowState & { sendWindowUpdate: () => void }) {
    if (typeof this.recvWindowCapacity === 'number' && typeof this.recvWindow === 'number' && updateMayWait(this)) return
    original.call(this)
  }
  installed = true
  return true
}
