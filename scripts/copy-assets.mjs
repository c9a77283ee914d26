// tsc compiles TypeScript only: copy the files the compiled service reads at run time.
import { cpSync } from 'node:fs'

cpSync('db/migrations', 'dist/db/migrations', { recursive: true })
cpSync('public', 'dist/public', { recursive: true })
