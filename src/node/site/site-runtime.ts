/**
 * What both sides share while they run: the storage failure that stops a site, the one way each
 * carries out its state machine's actions, its services and tick, and the one way it stops.
 *
 * The convention for actions, the same on both sides: a node's `run(actions)` carries them out in
 * the order given, through `carryOut`, and none once storage failed (a binding that did not reach
 * the disk must not be followed by a welcome); its `complete(step)` feeds the completion of storage
 * work back to the state machine only while storage has not failed.
 */
import { type StorageFault, storageFaultOf } from '../../core/errors.ts';
import type { Timer } from '../../io/clock.ts';
import type { SiteEnvironment } from '../../io/environment.ts';
import type { FileConfig } from '../../ops/config.ts';
import type { Logger } from '../../ops/logger.ts';
import type { AdminHandler } from '../../ops/status-server.ts';
import { type ServedSite, SiteServices } from './site-services.ts';

/** How stop() ends the site: how long NBD requests in flight may take, how long status stays up. */
export interface StopOptions {
  /** NBD requests in flight get this long to finish; connections still open then are cut. */
  nbdDrainMs?: number;
  /** The status endpoint keeps answering (with the fault, if any) this long before it closes. */
  statusLingerMs?: number;
}

/** How a site is started besides its config, logger and owner's failure callback. */
export interface SiteStartOptions {
  /** Open storage and finish interrupted work only: no link, no services, no tick (for recover). */
  offline?: boolean;
  /**
   * What the site takes from the world: files, time, randomness and, in the simulator, the link's
   * network. The process's own (nodeEnvironment) when absent.
   */
  environment?: SiteEnvironment;
  /** Admin verbs the status listener takes (the daemon's: docs/failover.md). */
  admin?: AdminHandler;
  /**
   * A secondary's primary asked it to take over in a switchover (the daemon's: docs/failover.md):
   * null once the promotion started, else why it cannot be.
   */
  onPromotionRequested?: (cycle: number, generation: string) => string | null;
}

/** Runs one step of a stop: a failed step is remembered and the next one still runs. */
export type StopAttempt = (step: () => Promise<unknown> | unknown) => Promise<void>;

/** A node's part of its stop: `windDown` closes links and storage, `stopped` logs that it is done. */
export interface StopSteps {
  windDown(attempt: StopAttempt): Promise<void>;
  stopped(): void;
}

export class SiteRuntime {
  /** Set when storage failed: the process must stop; nothing more is made durable or answered. */
  fatal: Error | null = null;
  /** The failure as the status reports it, with when it happened. */
  fault: StorageFault | null = null;
  private services: SiteServices | null = null;
  private ticker: Timer | null = null;
  private stopped: Promise<void> | null = null;

  constructor(
    private readonly config: FileConfig,
    /** What the site takes from the world: its time comes from environment.clock only. */
    readonly environment: SiteEnvironment,
    private readonly logger: Logger,
    /** Told once, when storage failed: the node answers whatever waits, then tells its owner. */
    private readonly onFailure: (error: Error) => void,
  ) {}

  /** The site began to stop: work it would start now (an apply's next step) waits for the restart. */
  get stopping(): boolean {
    return this.stopped !== null;
  }

  /**
   * Carries out a state machine's actions in order; none once storage failed. Once the stop began
   * closing storage, only those in `fileFree` (their `type`): an action that touches a file then
   * (a late session's append, a site.json record) could land in files a role change has already
   * put in place of these.
   */
  carryOut<Action extends { type: string }>(
    actions: readonly Action[],
    execute: (action: Action) => void,
    fileFree: ReadonlySet<string>,
  ): void {
    for (const action of actions) {
      if (this.fatal) return;
      if (this.storageClosing && !fileFree.has(action.type)) continue;
      execute(action);
    }
  }

  /** The stop is closing storage: see carryOut. */
  private storageClosing = false;

  /** Called by a node's stop before it closes its storage. */
  closingStorage(): void {
    this.storageClosing = true;
  }

  /**
   * Storage failed: nothing more can be made durable. The failure is kept for the status (a full
   * disk stays recognisable in its kind) and the node is told, once, so it answers what waits and
   * its owner stops the process.
   */
  fail(error: unknown): void {
    if (this.fatal) return;
    this.fatal = error instanceof Error ? error : new Error(String(error));
    this.fault = storageFaultOf(this.fatal, new Date(this.environment.clock.now()));
    this.logger.error('storage-failed', { kind: this.fault.kind, reason: this.fault.message });
    this.onFailure(this.fatal);
  }

  /**
   * The journal's own failures (a watermark or checkpoint frame that could not be written) stop
   * the site at once; during a stop, the stop's own steps report them.
   */
  watchJournal(journal: { onFailure(listener: (failure: Error) => void): void }): void {
    journal.onFailure((failure) => {
      if (!this.stopping) this.fail(failure);
    });
  }

  /** Starts NBD and the status endpoint, as the config asks. */
  async serve(site: ServedSite): Promise<void> {
    this.services = await SiteServices.start(this.config, site, this.logger);
  }

  /** The status listener's certificate read again (SIGHUP), when it serves HTTPS. */
  reloadStatusTls(): void {
    this.services?.reloadTls();
  }

  /**
   * Drives the state machine's timers: `tick` every `intervalMs` until the site stops. Each tick
   * runs soon after its timer, not in it: when this process was busy past a timer, the bytes its
   * peers sent meanwhile are read first, so the tick never blames a peer for silence that was this
   * process not listening.
   */
  tickEvery(intervalMs: number, tick: () => void): void {
    const clock = this.environment.clock;
    this.ticker = clock.every(intervalMs, () =>
      clock.soon(() => {
        if (!this.stopped) tick();
      }),
    );
  }

  /**
   * The one way a site stops, whether asked to or after a storage failure: the tick ends, NBD
   * drains, the node winds its links and storage down, the status endpoint closes last. Rejects
   * with the first new storage error; after a storage failure the same failure comes back from
   * every step, and it was reported already.
   */
  stop(options: StopOptions, steps: StopSteps): Promise<void> {
    this.stopped ??= this.stopOnce(options, steps);
    return this.stopped;
  }

  private async stopOnce(options: StopOptions, steps: StopSteps): Promise<void> {
    this.ticker?.cancel();
    await this.services?.stopNbd(options.nbdDrainMs ?? this.config.shutdown.timeoutMs / 2);
    const errors: unknown[] = [];
    const attempt: StopAttempt = (step) =>
      Promise.resolve()
        .then(step)
        .then(
          () => {},
          (error: unknown) => {
            errors.push(error);
          },
        );
    await steps.windDown(attempt);
    await this.services?.closeStatus(this.fault ? (options.statusLingerMs ?? 0) : 0);
    steps.stopped();
    if (errors.length > 0 && !this.fatal) throw errors[0];
  }
}
