import { pino, type Logger } from 'pino'

export type { Logger }

/**
 * Structured logs: one JSON object per line with level, time and context (component, tree, seq, peer).
 * On a terminal they are rendered human-readable; DELTAMESH_LOG_LEVEL picks the level (default info).
 */
export function createLogger (options: { level?: string, pretty?: boolean, destination?: number } = {}): Logger {
  const level = options.level ?? process.env.DELTAMESH_LOG_LEVEL ?? 'info'
  const pretty = options.pretty ?? process.stderr.isTTY
  if (pretty) {
    return pino({ level, transport: { target: 'pino-pretty', options: { destination: options.destination ?? 2, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } } })
  }
  return pino({ level, base: { pid: process.pid } }, pino.destination({ dest: options.destination ?? 2, sync: true }))
}

/** A logger that drops everything (tests, library use). */
export function silentLogger (): Logger {
  return pino({ level: 'silent' })
}
