/**
 * Assertions stay on in production: a broken internal assumption could corrupt a replica, so the
 * process stops loudly instead of going on.
 */
export class AssertionFailure extends Error {
  override name = 'AssertionFailure';
}

export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new AssertionFailure(message);
}

export function unreachable(value: never, what: string): never {
  throw new AssertionFailure(`unreachable ${what}: ${String(value)}`);
}
