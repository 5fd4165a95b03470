import { describe, expect, it } from 'vitest'
import { StreamState, YamuxStream } from '@chainsafe/libp2p-yamux/stream'
import { halfWindowUpdates, updateMayWait } from '../../agent/net/yamux-window.js'

// Yamux window updates once half the window is consumed (as Go's yamux), not after every data frame.

describe('yamux window updates at half the window', () => {
  it('lets an update wait while more than half the window is open and no flags are due', () => {
    const window = 4 * 1024 * 1024
    expect(updateMayWait({ state: StreamState.Established, recvWindow: window, recvWindowCapacity: window - 64 * 1024 })).toBe(true)
    expect(updateMayWait({ state: StreamState.Established, recvWindow: window, recvWindowCapacity: window / 2 })).toBe(false)
    expect(updateMayWait({ state: StreamState.Established, recvWindow: window, recvWindowCapacity: 0 })).toBe(false)
    // opening a stream (SYN, ACK) is never held back
    expect(updateMayWait({ state: StreamState.Init, recvWindow: window, recvWindowCapacity: window })).toBe(false)
    expect(updateMayWait({ state: StreamState.SYNReceived, recvWindow: window, recvWindowCapacity: window })).toBe(false)
  })

  it('patches the stream class: the data frames of half a window get one update, for all that was consumed', () => {
    expect(halfWindowUpdates()).toBe(true)
    expect(halfWindowUpdates()).toBe(true) // once per process
    const sent: Array<{ length: number }> = []
    const window = 1024 * 1024
    const stream = {
      state: StreamState.Established,
      recvWindow: window,
      recvWindowCapacity: window,
      epochStart: Date.now(),
      streamId: 1,
      getSendFlags: () => 0,
      getRTT: () => -1,
      sendFrame: (header: { length: number }) => { sent.push(header) },
    }
    const update = (YamuxStream.prototype as unknown as { sendWindowUpdate: () => void }).sendWindowUpdate
    // 16 data frames of 64 KiB: the window is consumed to 0; one update at the half, one at the end
    for (let i = 0; i < 16; i++) {
      stream.recvWindowCapacity -= 64 * 1024
      update.call(stream)
    }
    expect(sent.map(h => h.length)).toEqual([window / 2, window / 2])
    expect(stream.recvWindowCapacity).toBe(window)
  })
})
