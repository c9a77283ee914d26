import neostandard from 'neostandard'

export default [
  ...neostandard({
    ts: true,
    ignores: ['dist/**', '.data/**', 'node_modules/**', 'public/**']
  }),
  // Long lines hide what a diff changes; 140 leaves room for a test's name and a SQL clause.
  { rules: { '@stylistic/max-len': ['error', { code: 140, ignoreUrls: true }] } }
]
