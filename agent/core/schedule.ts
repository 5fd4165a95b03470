// Time-of-day / day-of-week windows with their own rates ("5MB/s 08:00–18:00 Mon–Fri, unlimited
// otherwise"), evaluated in the agent's local time zone. Pure: the caller passes the time.

import { DeltameshError } from '../../protocol/errors.js'
import { parseRate } from './rate.js'

export class ScheduleParseError extends DeltameshError {
  static override name = 'ScheduleParseError'
  constructor (readonly field: 'days' | 'hours', readonly input: string, expected: string) {
    super(`Not a schedule ${field} value: ${JSON.stringify(input)} (expected ${expected})`)
    this.name = 'ScheduleParseError'
  }
}

export interface ScheduleWindowSpec {
  /** "Mon-Fri", "Sat,Sun", "daily", "weekdays", "weekends"; default daily. */
  days?: string
  /** "08:00-18:00"; a window whose end is before its start runs past midnight into the next day. */
  hours: string
  up?: string
  down?: string
}

export interface ScheduleWindow {
  /** Days the window starts on, 0 = Sunday (Date.getDay). */
  days: ReadonlySet<number>
  startMinute: number
  endMinute: number
  /** Bytes/s during the window; undefined = the link's base rate applies in that direction. */
  up?: number
  down?: number
  /** As the operator wrote it, for status. */
  text: string
}

const DAY_NAMES = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat']
const DAYS_EXPECTED = 'day names such as Mon-Fri, Sat,Sun, daily, weekdays or weekends'
const HOURS_EXPECTED = 'HH:MM-HH:MM in 24-hour local time, e.g. 08:00-18:00'

function dayIndex (name: string, input: string): number {
  const i = DAY_NAMES.indexOf(name.trim().slice(0, 3).toLowerCase())
  if (i < 0 || name.trim().length < 3) throw new ScheduleParseError('days', input, DAYS_EXPECTED)
  return i
}

export function parseDays (input: string): Set<number> {
  const text = input.trim().toLowerCase()
  if (text === 'daily' || text === 'all' || text === '*') return new Set([0, 1, 2, 3, 4, 5, 6])
  if (text === 'weekdays') return new Set([1, 2, 3, 4, 5])
  if (text === 'weekends') return new Set([0, 6])
  const days = new Set<number>()
  for (const part of text.split(',')) {
    if (part.trim() === '') throw new ScheduleParseError('days', input, DAYS_EXPECTED)
    const range = part.split('-')
    if (range.length === 1) { days.add(dayIndex(part, input)); continue }
    if (range.length !== 2) throw new ScheduleParseError('days', input, DAYS_EXPECTED)
    const from = dayIndex(range[0] as string, input)
    const to = dayIndex(range[1] as string, input)
    // Fri-Mon wraps over the weekend
    for (let d = from; ; d = (d + 1) % 7) { days.add(d); if (d === to) break }
  }
  return days
}

function minuteOf (hhmm: string, input: string): number {
  const m = /^(\d{1,2}):(\d{2})$/.exec(hhmm.trim())
  if (m === null) throw new ScheduleParseError('hours', input, HOURS_EXPECTED)
  const h = Number(m[1])
  const min = Number(m[2])
  if (h > 24 || min > 59 || (h === 24 && min !== 0)) throw new ScheduleParseError('hours', input, HOURS_EXPECTED)
  return h * 60 + min
}

export function parseHours (input: string): { startMinute: number, endMinute: number } {
  const parts = input.split('-')
  if (parts.length !== 2) throw new ScheduleParseError('hours', input, HOURS_EXPECTED)
  const startMinute = minuteOf(parts[0] as string, input)
  const endMinute = minuteOf(parts[1] as string, input)
  if (startMinute === endMinute || startMinute === 24 * 60) throw new ScheduleParseError('hours', input, HOURS_EXPECTED)
  return { startMinute, endMinute }
}

export function parseWindow (spec: ScheduleWindowSpec): ScheduleWindow {
  const days = parseDays(spec.days ?? 'daily')
  const { startMinute, endMinute } = parseHours(spec.hours)
  return {
    days,
    startMinute,
    endMinute,
    up: spec.up === undefined ? undefined : parseRate(spec.up),
    down: spec.down === undefined ? undefined : parseRate(spec.down),
    text: `${spec.days ?? 'daily'} ${spec.hours}`,
  }
}

/** Whether `at` (local time) falls in the window. */
export function windowContains (w: ScheduleWindow, at: Date): boolean {
  const minute = at.getHours() * 60 + at.getMinutes()
  const day = at.getDay()
  if (w.startMinute < w.endMinute) return w.days.has(day) && minute >= w.startMinute && minute < w.endMinute
  // past midnight: the evening part belongs to its own day, the morning part to the day before
  return (w.days.has(day) && minute >= w.startMinute) || (w.days.has((day + 6) % 7) && minute < w.endMinute)
}

export interface Limits { up: number, down: number }

/** The rates in force at `at`: the first window that contains it overrides the base, per direction. */
export function ratesAt (base: Limits, windows: readonly ScheduleWindow[], at: Date): Limits & { window?: ScheduleWindow } {
  const window = windows.find(w => windowContains(w, at))
  if (window === undefined) return { ...base }
  return { up: window.up ?? base.up, down: window.down ?? base.down, window }
}
