/// <reference path="./kiln-task-types.d.ts" />
declare module 'kiln:task/log@0.1.0' {
  /**
   * Records a log line for the current attempt. `attributes` is a JSON object, if given.
   */
  export function log(level: Level, message: string, attributes: Json | undefined): void;
  export type Json = import('kiln:task/types@0.1.0').Json;
  /**
   * # Variants
   * 
   * ## `"trace"`
   * 
   * ## `"debug"`
   * 
   * ## `"info"`
   * 
   * ## `"warn"`
   * 
   * ## `"error"`
   */
  export type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error';
}
