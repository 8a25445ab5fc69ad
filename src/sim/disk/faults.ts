/**
 * Failures injected on chosen calls: a rule names the system calls (as node:fs names them in an
 * error's `syscall`), the error code, and optionally the path and how many calls it fails. A call
 * on a descriptor matches by the path it was opened with.
 */
import type { Syscall } from './fs-error.ts';

export type FaultCode = 'ENOSPC' | 'EIO';

export interface FaultRule {
  call: Syscall | readonly Syscall[];
  code: FaultCode;
  /** Only calls on this path, or on paths this accepts. */
  path?: string | ((path: string) => boolean);
  /** How many calls fail before the rule lapses; without it, every matching call until cancel(). */
  times?: number;
}

export interface FaultHandle {
  /** Calls this rule has failed so far. */
  readonly fired: number;
  cancel(): void;
}

class ActiveRule implements FaultHandle {
  fired = 0;
  cancelled = false;
  private readonly calls: ReadonlySet<Syscall>;

  constructor(private readonly rule: FaultRule) {
    this.calls = new Set(typeof rule.call === 'string' ? [rule.call] : rule.call);
  }

  get code(): FaultCode {
    return this.rule.code;
  }

  get spent(): boolean {
    return this.cancelled || (this.rule.times !== undefined && this.fired >= this.rule.times);
  }

  matches(call: Syscall, path: string | undefined): boolean {
    if (this.spent || !this.calls.has(call)) return false;
    const wanted = this.rule.path;
    if (wanted === undefined) return true;
    if (path === undefined) return false;
    return typeof wanted === 'string' ? wanted === path : wanted(path);
  }

  cancel(): void {
    this.cancelled = true;
  }
}

export class FaultInjector {
  private rules: ActiveRule[] = [];

  add(rule: FaultRule): FaultHandle {
    const active = new ActiveRule(rule);
    this.rules.push(active);
    return active;
  }

  /** The code the first live rule matching this call fails it with (counting it), or null. */
  take(call: Syscall, path: string | undefined): FaultCode | null {
    if (this.rules.length === 0) return null;
    this.rules = this.rules.filter((rule) => !rule.spent);
    const rule = this.rules.find((candidate) => candidate.matches(call, path));
    if (!rule) return null;
    rule.fired++;
    return rule.code;
  }
}
