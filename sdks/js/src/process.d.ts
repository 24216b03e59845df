// `process.env` for TypeScript, in projects without Node's types: add
// `"types": ["@kiln-run/sdk/process"]` to tsconfig.json (with `@types/node`, leave it out: Node's
// `process` already types `process.env`). The SDK fills it at the start of every run.
declare var process: { env: Record<string, string | undefined> };
