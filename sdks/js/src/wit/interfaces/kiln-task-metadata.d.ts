/// <reference path="./kiln-task-types.d.ts" />
declare module 'kiln:task/metadata@0.1.0' {
  /**
   * The metadata, `{}` when there is none.
   */
  export function get(target: Target): Json;
  /**
   * Applies the operations in order, all or none; returns the new metadata, or why they were
   * refused (too large, a bad key, incrementing a non-number).
   */
  export function update(target: Target, operations: Array<Operation>): Json;
  export type Json = import('kiln:task/types@0.1.0').Json;
  /**
   * Whose metadata: this run's, its parent's or its root's (a run without a parent is its own
   * parent and root).
   * # Variants
   * 
   * ## `"current"`
   * 
   * ## `"parent"`
   * 
   * ## `"root"`
   */
  export type Target = 'current' | 'parent' | 'root';
  /**
   * One change; keys are top-level names or `$.a.b` paths.
   */
  export type Operation = OperationSet | OperationDel | OperationAppend | OperationRemove | OperationIncrement | OperationReplace;
  export interface OperationSet {
    tag: 'set',
    val: [string, Json],
  }
  export interface OperationDel {
    tag: 'del',
    val: string,
  }
  export interface OperationAppend {
    tag: 'append',
    val: [string, Json],
  }
  export interface OperationRemove {
    tag: 'remove',
    val: [string, Json],
  }
  export interface OperationIncrement {
    tag: 'increment',
    val: [string, number],
  }
  /**
   * Replaces the whole object.
   */
  export interface OperationReplace {
    tag: 'replace',
    val: Json,
  }
}
