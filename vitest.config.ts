import { defineConfig } from 'vitest/config'

/** Tests that measure rates on real agents: they run after the others, one file at a time, so that the
 *  other end-to-end tests do not take the CPU that keeps the limited links busy. */
const TIMING = ['test/e2e/bandwidth.test.ts']

export default defineConfig({
  test: {
    // libp2p 3 needs Promise.withResolvers (Node 22): the polyfill must load before any test module.
    setupFiles: ['./agent/polyfill.ts'],
    testTimeout: 180_000,
    hookTimeout: 60_000,
    // end-to-end tests spawn several agents each; two files at a time fit a 2-core CI machine
    maxWorkers: 2,
    projects: [
      { extends: true, test: { name: 'main', include: ['test/**/*.test.ts'], exclude: TIMING } },
      { extends: true, test: { name: 'timing', include: TIMING, fileParallelism: false, sequence: { groupOrder: 1 } } },
    ],
  },
})
