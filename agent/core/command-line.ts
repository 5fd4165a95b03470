// A subscription's gate and post-version commands are run without a shell: an argv array. On the command line
// they are one string, split into words by this small rule (README "Reacting to new versions"):
//   - words are separated by spaces and tabs;
//   - '…' keeps everything inside literally; "…" too, except that \" and \\ stand for " and \;
//   - outside quotes, a backslash makes the next character literal;
//   - nothing is expanded: no variables, globs, ~, pipes or redirections. An unquoted | & ; < > ( ) $ ` * ?
//     is refused, since it means the user expected a shell: write `sh -c '…'` for one.
import { DeltameshError } from '../../protocol/errors.js'

/** Words of a command at most (a test suite's argv is short; a glob expansion is not what this is for). */
export const MAX_COMMAND_WORDS = 256
/** Bytes of a whole command at most. */
export const MAX_COMMAND_BYTES = 16 * 1024

export class CommandLineError extends DeltameshError {
  static override name = 'CommandLineError'
  constructor (readonly option: string, readonly text: string, reason: string) {
    super(`${option} ${JSON.stringify(text.slice(0, 200))}: ${reason}`)
    this.name = 'CommandLineError'
  }
}

const SHELL_CHARS = new Set(['|', '&', ';', '<', '>', '(', ')', '$', '`', '*', '?'])

/** Splits `text` into an argv by the rule above; throws CommandLineError (`option` names the flag in messages). */
export function splitCommandLine (text: string, option = 'command'): string[] {
  const words: string[] = []
  let word: string | undefined
  let quote: '"' | "'" | undefined
  for (let i = 0; i < text.length; i++) {
    const ch = text[i] as string
    if (quote === "'") {
      if (ch === "'") quote = undefined
      else word += ch
    } else if (quote === '"') {
      if (ch === '"') quote = undefined
      else if (ch === '\\' && (text[i + 1] === '"' || text[i + 1] === '\\')) word += text[++i] as string
      else word += ch
    } else if (ch === ' ' || ch === '\t') {
      if (word !== undefined) { words.push(word); word = undefined }
    } else if (ch === "'" || ch === '"') {
      quote = ch
      word ??= ''
    } else if (ch === '\\') {
      if (i + 1 >= text.length) throw new CommandLineError(option, text, 'ends with a lone backslash')
      word = (word ?? '') + (text[++i] as string)
    } else if (ch === '\n' || ch === '\r') {
      throw new CommandLineError(option, text, 'a line break: give one command (a script file, or sh -c \'…\' for several)')
    } else if (SHELL_CHARS.has(ch)) {
      throw new CommandLineError(option, text, `an unquoted ${ch}: commands run without a shell, so it would be passed literally; quote it, or write sh -c '…' to use a shell`)
    } else {
      word = (word ?? '') + ch
    }
  }
  if (quote !== undefined) throw new CommandLineError(option, text, `unterminated ${quote} quote`)
  if (word !== undefined) words.push(word)
  return checkArgv(words, option)
}

/** Checks an argv (from a split string, or an array sent to the control API): non-empty, bounded, no NUL. */
export function checkArgv (argv: unknown, option = 'command'): string[] {
  if (!Array.isArray(argv) || !argv.every(w => typeof w === 'string')) throw new CommandLineError(option, String(argv), 'expected a list of words')
  const words = argv as string[]
  const text = words.join(' ')
  if (words.length === 0 || words[0] === '') throw new CommandLineError(option, text, 'no command')
  if (words.length > MAX_COMMAND_WORDS) throw new CommandLineError(option, text, `${words.length} words, more than ${MAX_COMMAND_WORDS}`)
  if (Buffer.byteLength(text) > MAX_COMMAND_BYTES) throw new CommandLineError(option, text, `longer than ${MAX_COMMAND_BYTES} bytes`)
  if (words.some(w => w.includes('\0'))) throw new CommandLineError(option, text, 'contains a NUL byte')
  return words
}

/** An argv as one line for people: words with spaces or quotes are single-quoted. */
export function formatArgv (argv: readonly string[]): string {
  return argv.map(w => /^[A-Za-z0-9_@%+=:,./-]+$/.test(w) ? w : `'${w.replace(/'/g, "'\\''")}'`).join(' ')
}
