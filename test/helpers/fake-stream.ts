/** A stand-in for a libp2p stream: FrameStream only listens to events and (on error paths) sends/aborts. */
export class FakeStream extends EventTarget {
  readonly log = Object.assign(() => {}, { trace: () => {}, error: () => {}, newScope: () => this.log })
  send (): boolean { return true }
  async onDrain (): Promise<void> {}
  async close (): Promise<void> {}
  abort (): void {}
  /** Hands `bytes` to the listeners as if the peer had sent them. */
  deliver (bytes: Uint8Array): void {
    this.dispatchEvent(Object.assign(new Event('message'), { data: bytes }))
  }
}
