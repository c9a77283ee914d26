// Only test/api-doc.test.ts imports this path still: the harness is test/support/app.ts.
export * from './support/app.js'
