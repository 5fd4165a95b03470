import type { Command } from 'commander'

export function registerDemoCommand (program: Command): void {
  program.command('demo')
    .description('start three agents on 127.0.0.1 in a temp dir, publish a generated tree and a changed version, and show the labs converging and the bytes each moved')
    .option('--keep', 'keep the temp dir (homes, mirrors, logs) afterwards')
    .action(async (opts: { keep?: boolean }) => {
      const { runDemo } = await import('../demo/demo.js')
      await runDemo({ keep: opts.keep })
    })
}
