// Imported by cli.ts right after the polyfill and before the command modules are loaded: loading and starting
// the agent otherwise grows V8's young generation to 32 MiB, which an idle agent then holds (core/heap.ts).
// The agent command lets it grow again once started (commands/remote.ts), so a busy agent keeps V8's default;
// the CLI's other commands are short-lived.
import { keepYoungGenerationSmall } from './core/heap.js'

keepYoungGenerationSmall()

export {}
