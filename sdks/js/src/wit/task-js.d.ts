/// <reference path="./interfaces/kiln-task-log.d.ts" />
/// <reference path="./interfaces/kiln-task-metadata.d.ts" />
/// <reference path="./interfaces/kiln-task-tasks.d.ts" />
/// <reference path="./interfaces/kiln-task-types.d.ts" />
/// <reference path="./interfaces/kiln-task-wait.d.ts" />
/// <reference path="./interfaces/wasi-cli-environment.d.ts" />
declare module 'kiln:js/task-js@0.1.0' {
  export type Json = import('kiln:task/types@0.1.0').Json;
  export type RunContext = import('kiln:task/types@0.1.0').RunContext;
  export type TaskError = import('kiln:task/types@0.1.0').TaskError;
  export type TaskDefinition = import('kiln:task/types@0.1.0').TaskDefinition;
  export type * as KilnTaskLog010 from 'kiln:task/log@0.1.0'; // import kiln:task/log@0.1.0
  export type * as KilnTaskMetadata010 from 'kiln:task/metadata@0.1.0'; // import kiln:task/metadata@0.1.0
  export type * as KilnTaskTasks010 from 'kiln:task/tasks@0.1.0'; // import kiln:task/tasks@0.1.0
  export type * as KilnTaskTypes010 from 'kiln:task/types@0.1.0'; // import kiln:task/types@0.1.0
  export type * as KilnTaskWait010 from 'kiln:task/wait@0.1.0'; // import kiln:task/wait@0.1.0
  export type * as WasiCliEnvironment0212 from 'wasi:cli/environment@0.2.12'; // import wasi:cli/environment@0.2.12
  /**
  * The tasks this component offers; called once when the component is deployed.
  */
  export function definitions(): Array<TaskDefinition>;
  /**
  * Runs one attempt of the task `task-id` with a JSON payload; returns JSON output.
  */
  export function run(taskId: string, payload: Json, ctx: RunContext): Json;
  export type Result<T, E> = { tag: 'ok', val: T } | { tag: 'err', val: E };
}
