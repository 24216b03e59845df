/// <reference path="./kiln-task-types.d.ts" />
declare module 'kiln:task/wait@0.1.0' {
  /**
   * Waits `ms` milliseconds.
   */
  export function forDuration(ms: bigint): void;
  /**
   * Waits until `at-ms` milliseconds since the Unix epoch (returns at once if that has passed).
   */
  export function until(atMs: bigint): void;
  /**
   * Makes a wait token. Made once: a replay returns the same token.
   */
  export function createToken(options: TokenOptions): Token;
  /**
   * Waits until the token is completed (its JSON data) or times out. Checkpoints the run
   * unless the token is already done.
   */
  export function forToken(id: string): Json;
  export type Json = import('kiln:task/types@0.1.0').Json;
  /**
   * How to make a wait token.
   */
  export interface TokenOptions {
    /**
     * The token times out this many milliseconds after it is made (default: never).
     */
    timeoutMs?: bigint,
    /**
     * Making a token with a key that is still live returns that token instead.
     */
    idempotencyKey?: string,
    /**
     * How long the key stays live, in milliseconds (default 30 days).
     */
    idempotencyKeyTtlMs?: bigint,
    /**
     * Up to 10 tags, each 1–128 characters.
     */
    tags: Array<string>,
  }
  /**
   * A wait token: something outside the run completes it, with JSON data.
   */
  export interface Token {
    /**
     * `waitpoint_…`; complete it with `POST /api/v1/waitpoints/tokens/{id}/complete`.
     */
    id: string,
    /**
     * A URL that completes the token when POSTed JSON, without a secret key.
     */
    url: string,
    /**
     * The idempotency key matched an earlier token.
     */
    isCached: boolean,
  }
  /**
   * Why waiting for a token ended without data.
   */
  export type TokenError = TokenErrorTimedOut | TokenErrorInvalid;
  /**
   * The token's timeout passed first.
   */
  export interface TokenErrorTimedOut {
    tag: 'timed-out',
    val: string,
  }
  /**
   * The id names no token of this environment, or the options were invalid.
   */
  export interface TokenErrorInvalid {
    tag: 'invalid',
    val: string,
  }
}
