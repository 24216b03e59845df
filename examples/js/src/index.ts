// The component's entry: every task of the project, from the files that declare them.
export * from "./hello.js";
export * from "./waits.js";
