import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // libp2p 3 needs Promise.withResolvers (Node 22); the polyfill must load before any test module.
    setupFiles: ['./agent/polyfill.ts'],
    testTimeout: 180_000,
    hookTimeout: 60_000,
    // end-to-end tests spawn several agents each; two files at a time fit a 2-core CI machine
    maxWorkers: 2,
  },
})
