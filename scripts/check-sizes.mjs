// Size limits of the product's code (issue 20): no source file over MAX_FILE_LINES lines, no function over
// MAX_FUNCTION_LINES. A module or function that grows past them holds more than one idea: split it.
// Run by `npm test` (npm run check:sizes). Parses with @swc/core (a dev dependency, also dependency-cruiser's parser).
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { parseSync } from '@swc/core'

const MAX_FILE_LINES = 450
const MAX_FUNCTION_LINES = 80
const ROOTS = ['agent', 'protocol']

function * sources (dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) yield * sources(path)
    else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) yield path
  }
}

const FUNCTION_TYPES = new Set(['FunctionDeclaration', 'FunctionExpression', 'ArrowFunctionExpression', 'ClassMethod', 'PrivateMethod', 'Constructor'])

const problems = []
for (const root of ROOTS) {
  for (const file of sources(root)) {
    const text = readFileSync(file, 'utf8')
    const lines = text.split('\n').length - (text.endsWith('\n') ? 1 : 0)
    if (lines > MAX_FILE_LINES) problems.push(`${file}: ${lines} lines (limit ${MAX_FILE_LINES})`)
    // swc spans are byte offsets into one growing source map: measure from this module's own start
    const ast = parseSync(text, { syntax: 'typescript' })
    const base = ast.span.start
    const bytes = Buffer.from(text)
    const lineAt = offset => bytes.subarray(0, offset - base).toString().split('\n').length
    const visit = (node, name) => {
      if (node === null || typeof node !== 'object') return
      if (Array.isArray(node)) { for (const n of node) visit(n, name); return }
      let own = name
      if (node.type === 'FunctionDeclaration') own = node.identifier?.value
      else if (node.type === 'VariableDeclarator' && node.id?.type === 'Identifier') own = node.id.value
      else if ((node.type === 'ClassMethod' || node.type === 'PrivateMethod') && node.key) own = node.key.value ?? node.key.id?.value
      else if (node.type === 'KeyValueProperty' && node.key) own = node.key.value
      else if (node.type === 'Constructor') own = 'constructor'
      if (FUNCTION_TYPES.has(node.type) && node.span !== undefined) {
        const span = node.type === 'ClassMethod' || node.type === 'PrivateMethod' ? node.function.span : node.span
        const count = lineAt(span.end) - lineAt(span.start) + 1
        if (count > MAX_FUNCTION_LINES) problems.push(`${file}:${lineAt(span.start)}: function ${own ?? '(anonymous)'} has ${count} lines (limit ${MAX_FUNCTION_LINES})`)
      }
      for (const key of Object.keys(node)) if (key !== 'span') visit(node[key], own)
    }
    visit(ast.body, undefined)
  }
}
if (problems.length > 0) {
  process.stderr.write(`check:sizes: ${problems.length} over the limits:\n${problems.map(p => `  ${p}`).join('\n')}\n`)
  process.exit(1)
}
process.stdout.write('check:sizes: every file and function within the limits\n')
