/** The errors a source's request can meet at the primary: each fails that request only. */
import { CyclerepError } from '../../core/errors.ts';

export type PrimaryNodeErrorCode = 'write-misaligned' | 'write-out-of-range' | 'journal-full' | 'stopping';

/** A source's request the primary will not take; only that request fails. */
export class PrimaryNodeError extends CyclerepError {
  declare readonly code: PrimaryNodeErrorCode;
  constructor(code: PrimaryNodeErrorCode, message: string) {
    super(code, message);
  }
}
