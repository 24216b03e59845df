#!/usr/bin/env node
// kiln-build: turns a TypeScript or JavaScript file of kiln tasks into one deployable component.
//
//   npx kiln-build src/tasks.ts -o dist/tasks.wasm
//
// It bundles the file and everything it imports with esbuild (the component's entry imports the
// file, so its `task(...)` declarations register, and re-exports the SDK's `definitions` and `run`),
// then makes a component of the SDK's world (`kiln:task/task` plus `wasi:cli/environment`) with
// componentize-js. Both tools come
// pinned with this package (see package-lock.json); nothing is downloaded at build time. It never
// writes anywhere but the output file and a temporary directory it removes.

import { copyFileSync, mkdtempSync, mkdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const SDK_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const WIT = join(SDK_DIR, "wit");
const RUNTIME = join(SDK_DIR, "src", "runtime.ts");

const USAGE = `usage: kiln-build <tasks.ts|tasks.js> [-o out.wasm] [--keep-bundle]

Bundles the file with esbuild and makes a kiln task component with componentize-js.
  -o, --output FILE   where to write the component (default: dist/<name>.wasm)
  --keep-bundle       also write the bundled JavaScript next to the component (<out>.js)`;

function fail(message) {
  console.error(`kiln-build: ${message}`);
  process.exit(1);
}

function parseArgs(argv) {
  const args = { entry: undefined, output: undefined, keepBundle: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "-h" || a === "--help") {
      console.log(USAGE);
      process.exit(0);
    } else if (a === "-o" || a === "--output") {
      args.output = argv[++i];
      if (args.output === undefined) fail(`${a} needs a file name\n\n${USAGE}`);
    } else if (a === "--keep-bundle") {
      args.keepBundle = true;
    } else if (a.startsWith("-")) {
      fail(`unknown option ${a}\n\n${USAGE}`);
    } else if (args.entry === undefined) {
      args.entry = a;
    } else {
      fail(`one entry file only (got ${args.entry} and ${a})\n\n${USAGE}`);
    }
  }
  if (args.entry === undefined) fail(`no entry file given\n\n${USAGE}`);
  return args;
}

/** Imports a build tool, or stops with what to install. */
async function tool(name) {
  try {
    return await import(name);
  } catch (e) {
    if (e && (e.code === "ERR_MODULE_NOT_FOUND" || e.code === "MODULE_NOT_FOUND")) {
      fail(
        `cannot load ${name} (${e.message.split("\n")[0]}).\n` +
          `Install the SDK's pinned build tools: run \`npm ci\` (or \`npm install\`) in your project, ` +
          `with @kiln-run/sdk among its dependencies.`,
      );
    }
    throw e;
  }
}

async function main() {
  const [major] = process.versions.node.split(".").map(Number);
  if (major < 18) fail(`Node.js 18 or newer is needed (this is ${process.version})`);
  const args = parseArgs(process.argv.slice(2));
  const entry = resolve(args.entry);
  try {
    if (!statSync(entry).isFile()) fail(`${args.entry} is not a file`);
  } catch {
    fail(`${args.entry} does not exist`);
  }
  const name = entry.replace(/^.*[\\/]/, "").replace(/\.[cm]?[jt]sx?$/, "");
  const output = resolve(args.output ?? join("dist", `${name}.wasm`));

  const esbuild = await tool("esbuild");
  const { componentize } = await tool("@bytecodealliance/componentize-js");

  const started = Date.now();
  const work = mkdtempSync(join(tmpdir(), "kiln-build-"));
  try {
    const bundle = join(work, `${name}.js`);
    const result = await esbuild.build({
      stdin: {
        contents:
          `import ${JSON.stringify(entry)};\n` +
          `export { definitions, run } from ${JSON.stringify(RUNTIME)};\n`,
        resolveDir: dirname(entry),
        sourcefile: "kiln-entry.js",
        loader: "js",
      },
      outfile: bundle,
      bundle: true,
      format: "esm",
      platform: "neutral",
      mainFields: ["module", "main"],
      target: "es2022",
      // The component's imports: provided by kiln and the JS engine, not bundled.
      external: ["kiln:*", "wasi:*"],
      keepNames: true,
      logLevel: "error",
    }).catch(() => fail("bundling failed (esbuild's messages are above)"));
    if (result.errors.length > 0) fail("bundling failed");

    const { component } = await componentize({
      sourcePath: bundle,
      witPath: WIT,
      worldName: "task-js",
    }).catch((e) => fail(`componentize-js failed: ${e && e.message ? e.message : e}`));
    mkdirSync(dirname(output), { recursive: true });
    writeFileSync(output, component);
    if (args.keepBundle) copyFileSync(bundle, output.replace(/\.wasm$/, "") + ".js");
    const mib = (component.length / (1024 * 1024)).toFixed(1);
    console.log(`kiln-build: wrote ${output} (${mib} MiB) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e) => fail(e && e.stack ? e.stack : String(e)));
