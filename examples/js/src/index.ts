// The component's entry: every task of the project, from the files that declare them.
// `npm run build` turns it into one component, dist/tasks.wasm.
export * from "./approval.js";
export * from "./env.js";
export * from "./fanout.js";
export * from "./hello.js";
export * from "./http.js";
export * from "./outcomes.js";
export * from "./waits.js";
