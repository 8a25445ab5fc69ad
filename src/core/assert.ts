/**
 * Assertions stay on in production: a broken internal assumption could corrupt a replica, so the
 * process stops loudly instead of going on.
 */
export class AssertionFailure extends Error {
  override name = 'AssertionFailure';
}

/**
 * A message built from values is passed as a function: called only when the assertion fails, so
 * an assertion on a path taken for every write costs no string building.
 */
export function assert(condition: unknown, message: string | (() => string)): asserts condition {
  if (!condition) throw new AssertionFailure(typeof message === 'string' ? message : message());
}

export function unreachable(value: never, what: string): never {
  throw new AssertionFailure(`unreachable ${what}: ${String(value)}`);
}
