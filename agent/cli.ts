#!/usr/bin/env node
import './polyfill.js'
import './young-generation.js'

// Loaded after young-generation.js has run: static imports are all parsed and compiled before any of them
// runs, and compiling these alone grew V8's young generation to 16 MiB (see core/heap.ts).
const [{ Command }, { registerLocalCommands }, { registerRemoteCommands }, { registerDemoCommand }, { registerReactCommands }] = await Promise.all([
  import('commander'), import('./commands/local.js'), import('./commands/remote.js'), import('./commands/demo.js'), import('./commands/react.js'),
])

// Thin entry: parse argv and hand over to the command modules; every error is printed as one clear line.
const program = new Command()
program
  .name('deltamesh')
  .description('Peer-to-peer delta replication: publish file trees as signed chunk manifests; every site pulls only the chunks it lacks, from any peer.')
  .version('0.1.0')
  .showHelpAfterError('(run with --help for usage)')
  .configureHelp({ showGlobalOptions: true })

// A reader that stops early (`deltamesh manifest --entries | head -1`) is not an error: stop quietly, as
// coreutils do on SIGPIPE, instead of dying with an EPIPE stack trace.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0)
  throw err
})

registerLocalCommands(program)
registerRemoteCommands(program)
registerReactCommands(program)
registerDemoCommand(program)

program.parseAsync(process.argv).catch((err: unknown) => {
  const error = err as Error
  process.stderr.write(`deltamesh: ${error.name !== 'Error' ? `${error.name}: ` : ''}${error.message}\n`)
  if (process.env.DELTAMESH_DEBUG === '1') process.stderr.write(`${error.stack ?? ''}\n`)
  process.exitCode = typeof (err as { exitCode?: unknown }).exitCode === 'number' ? (err as { exitCode: number }).exitCode : 1
})
