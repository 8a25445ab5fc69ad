/**
 * The operator's role changes in a whole-site run (docs/failover.md), made through the sites' own
 * admin verbs as `cyclerep switchover | promote | rejoin` make them, and judged by the history:
 *
 * - a switchover loses no acknowledged write: the new primary's image holds every one;
 * - a promoted image is a consistent cut of the old primary's history, at least as new as the last
 *   image the secondary showed; the history forgets the writes after it (the failover's window of
 *   loss), so no site may ever show them again;
 * - the old primary, back, learns it was superseded (it is fenced), rejoins with a delta, and
 *   converges with the new primary byte for byte (the run's convergence check);
 * - two sites promoted apart (a split brain) exchange no data until one gives up its history.
 */
import type { AdminAnswer } from '../../ops/status-server.ts';
import type { History } from './history.ts';
import type { SimNetwork } from './sim-network.ts';
import { primaryNodeOf, type Site, type SiteRunStats, secondaryNodeOf } from './site-run.ts';
import type { RoleChangePlan } from './site-scenario.ts';
import type { Sources } from './sources.ts';

/** How long one step of a role change may take, in simulated ms, before it is a finding. */
export const roleChangeStepMsMax = 30_000;
const pollMs = 10;
/** How long the operator retries `promote` while the secondary still counts its primary connected. */
const promoteRetriesMax = 100;
const promoteRetryMs = 50;
/** How long the operator retries a switchover refused (its secondary not caught up, say). */
const switchoverRetriesMax = 25;
const switchoverRetryMs = 200;
/** How long a split brain lasts before the operator resolves it. */
const splitBrainMs = 3000;

/** What the role changes need of the run. */
export interface RoleChangeWorld {
  primary: Site;
  secondaries: Site[];
  readonly done: boolean;
  readonly sources: Sources;
  readonly history: History;
  readonly network: SimNetwork;
  readonly stats: SiteRunStats;
  now(): number;
  schedule(ms: number, run: () => void): void;
  note(line: string): void;
  violation(text: string): void;
  standing(): string;
  crash(site: Site, kind: 'process' | 'machine'): boolean;
  startSite(site: Site): void;
  /** Deletes a site's data directory and starts it again empty (an operator recreating it). */
  wipe(site: Site): void;
  imageOf(site: Site): Promise<Uint8Array[]>;
  cutOf(image: Uint8Array[], lower: readonly number[]): ReturnType<History['greatestCut']>;
  floorOf(site: Site): number[];
  judgePrimaryImage(image: Uint8Array[], lower: readonly number[], upper: readonly number[]): string | null;
  stopSources(): void;
}

type Promotion = 'pending' | 'in-force' | 'given-up';

export class RoleChanges {
  private promotion: Promotion = 'pending';
  private sourcesStopScheduled = false;

  constructor(private readonly run: RoleChangeWorld) {}

  /** Carries out `plan` once both sites are up as they were drawn, with no fault left over. */
  begin(plan: RoleChangePlan): void {
    const run = this.run;
    if (run.done) return;
    if (!this.sitesReady()) {
      run.schedule(50, () => this.begin(plan));
      return;
    }
    run.note(`operator: ${plan.kind}`);
    if (plan.kind === 'switchover') this.settled(this.switchover(plan, 0));
    else this.failover(plan);
  }

  private sitesReady(): boolean {
    const { primary, secondaries, sources } = this.run;
    const sites = [primary, ...secondaries];
    for (const site of sites) this.endDiskFault(site);
    return (
      primaryNodeOf(primary) !== null &&
      secondaries.every((site) => secondaryNodeOf(site) !== null) &&
      sites.every((site) => !site.restartPending && !site.diskFault && !site.host?.changingRole) &&
      !sources.awaitingSurvey &&
      // A restarted primary is judged before the sources go on: not in the middle of that.
      sources.attached
    );
  }

  /**
   * A disk fault whose time is over but that no call ran into (a full disk nobody wrote to, a
   * failed sync still armed) is withdrawn: the operator acts on healthy sites.
   */
  private endDiskFault(site: Site): void {
    const fault = site.diskFault;
    // A process that ran into it is failing-stop, or will once the failed call is reported (a
    // volume write's failure surfaces when its apply unit drains: seed 19349): its restart ends the
    // fault. A process started since (after a crash, say) never saw it (seeds 196, 305).
    const ranIntoIt = fault !== null && fault.handle.fired > 0 && fault.process === site.process;
    if (
      !fault ||
      fault.untilMs > this.run.now() ||
      ranIntoIt ||
      site.restartPending ||
      site.host?.node?.fatal
    )
      return;
    fault.handle.cancel();
    site.diskFault = null;
    if (site === this.run.primary) this.run.sources.expectFailures = false;
  }

  // ---- switchover ----

  private async switchover(plan: RoleChangePlan, attempt: number): Promise<void> {
    const run = this.run;
    const old = run.primary;
    const next = run.secondaries[0] as Site;
    const params = new URLSearchParams({ secondary: next.name, 'timeout-seconds': '5' });
    const answer = await this.admin(old, 'switchover', params);
    if (answer.status !== 202) {
      // Not caught up yet (back from a fault, say): the operator asks again a little later.
      if (attempt < switchoverRetriesMax) {
        run.schedule(switchoverRetryMs, () => this.settled(this.switchover(plan, attempt + 1)));
        return;
      }
      run.stats.roleChangesRefused++;
      this.writeOn(plan);
      return;
    }
    this.waitFor(
      'the switchover',
      () => primaryNodeOf(next) !== null || this.switchoverGivenUp(old, next),
      async () => {
        if (!primaryNodeOf(next)) {
          run.note('switchover given up: the primary takes writes again');
          run.stats.roleChangesRefused++;
          this.writeOn(plan);
          return;
        }
        run.stats.switchovers++;
        old.floor = [];
        old.appliedMax = 0;
        await this.takeOver(plan, next, [old], 'switchover');
      },
    );
  }

  /** The primary leads on: its secondary refused, or it was never asked in time. */
  private switchoverGivenUp(old: Site, next: Site): boolean {
    const node = primaryNodeOf(old);
    return node !== null && node.status().switchover === null && secondaryNodeOf(next) !== null;
  }

  // ---- failover, rejoin, split brain ----

  /**
   * The primary dies; the operator promotes the secondary. In a failover the old primary comes back
   * later; in a split brain it never does, and the second secondary is promoted too.
   */
  private failover(plan: RoleChangePlan): void {
    const run = this.run;
    const old = run.primary;
    const [next, other] = run.secondaries as [Site, Site | undefined];
    run.crash(old, plan.primaryCrash);
    run.sources.detach(plan.primaryCrash === 'machine');
    if (plan.kind === 'failover') {
      old.restartPending = true;
      run.schedule(plan.downMs, () => this.oldPrimaryBack(plan, old, next));
    }
    const givenUp = (): void => {
      run.stats.roleChangesRefused++;
      run.note('promotion refused: the operator brings the old primary back as the primary');
      this.promotion = 'given-up';
      if (plan.kind === 'split-brain') {
        run.startSite(old);
        this.writeOn(plan);
      }
    };
    this.promote(plan, next, 0, givenUp, async () => {
      if (other) this.splitBrain(plan, next, other);
      else await this.takeOver(plan, next, [old], 'failover');
      // Only now may the old primary come back: it is no longer the one the sources write to.
      this.promotion = 'in-force';
    });
  }

  /** `cyclerep promote` on `site`, asked again while it still counts its primary connected. */
  private promote(
    plan: RoleChangePlan,
    site: Site,
    attempt: number,
    refused: () => void,
    inForce: () => Promise<void>,
  ): void {
    const run = this.run;
    if (!secondaryNodeOf(site)) {
      run.violation(`${site.name} is not running as a secondary when it is to be promoted`);
      return;
    }
    const force = plan.force || plan.kind === 'split-brain';
    this.settled(
      this.admin(site, 'promote', new URLSearchParams(force ? { force: 'true' } : {})).then((answer) => {
        if (answer.status === 202) {
          this.waitFor(
            `the promotion of ${site.name}`,
            () => primaryNodeOf(site) !== null || this.promotionAbandoned(site),
            async () => {
              if (!primaryNodeOf(site)) {
                run.note(`${site.name} abandoned its promotion and runs on as a secondary`);
                refused();
                return;
              }
              run.stats.promotions++;
              await inForce();
            },
          );
          return;
        }
        if (errorOf(answer).includes('is connected') && attempt < promoteRetriesMax) {
          run.schedule(promoteRetryMs, () => this.promote(plan, site, attempt + 1, refused, inForce));
          return;
        }
        refused();
      }),
    );
  }

  /** The promotion ended with the site a secondary still (promotion-abandoned in its log). */
  private promotionAbandoned(site: Site): boolean {
    return secondaryNodeOf(site) !== null && site.host?.changingRole === false;
  }

  /**
   * The old primary's machine is back: as the primary again if the promotion was refused; else it
   * starts as the primary of the old generation, is fenced by the new one, and is told to rejoin.
   */
  private oldPrimaryBack(plan: RoleChangePlan, old: Site, next: Site): void {
    const run = this.run;
    if (run.done) return;
    if (this.promotion === 'pending') {
      run.schedule(promoteRetryMs, () => this.oldPrimaryBack(plan, old, next));
      return;
    }
    run.stats.restarts++;
    run.startSite(old);
    if (this.promotion === 'given-up') {
      this.writeOn(plan);
      return;
    }
    this.waitFor(
      `${old.name} fenced by the new primary`,
      () => primaryNodeOf(old)?.status().fenced != null,
      () => this.rejoin(old, next, false),
    );
  }

  private async rejoin(site: Site, primary: Site, discardMyData: boolean): Promise<void> {
    const run = this.run;
    const params = new URLSearchParams(discardMyData ? { 'discard-my-data': 'true' } : {});
    const answer = await this.admin(site, 'rejoin', params);
    if (answer.status !== 202) {
      run.violation(
        `${site.name}: cyclerep rejoin${discardMyData ? ' --discard-my-data' : ''} refused: ${errorOf(answer)}`,
      );
      return;
    }
    site.rejoining = true;
    if (discardMyData && (answer.body as { fullCopy?: unknown }).fullCopy === false)
      run.stats.splitBrainDeltas++;
    // A new secondary of a new history: what it showed before says nothing of what it may show now.
    site.floor = [];
    site.appliedMax = 0;
    run.stats.rejoins++;
    this.waitFor(
      `${site.name} following ${primary.name}`,
      () => secondaryNodeOf(site) !== null,
      () => {
        run.note(`${site.name} follows ${primary.name}`);
      },
    );
  }

  /**
   * The second secondary is promoted too, into a generation of its own: two primaries of diverged
   * histories. A client of the wrong site writes a few blocks to it (none of them the history's:
   * the rejoin must undo every one), and it must take no data from the first (its image is held to
   * what it showed then) until the operator resolves the split brain with `rejoin --discard-my-data`
   * on it, while that client still writes; it then follows the first with a delta or a full copy.
   * Promoted both before the sources go on, each is judged against the history they share. If the
   * second cannot be promoted (an in-place resync left it inconsistent), the operator recreates it
   * empty.
   */
  private splitBrain(plan: RoleChangePlan, first: Site, second: Site): void {
    const run = this.run;
    const recreate = (): void => {
      run.stats.roleChangesRefused++;
      run.note(`${second.name} cannot be promoted: the operator recreates it empty`);
      run.wipe(second);
      this.settled(this.takeOver(plan, first, [second], 'failover'));
    };
    this.promote(plan, second, 0, recreate, async () => {
      run.stats.splitBrains++;
      run.note(`${second.name} is a second primary: split brain`);
      await this.takeOver(plan, first, [second], 'failover');
      // Drawn from the plan, not the run's random: the seeds' other draws stay as they were.
      const ownWrites = 1 + (plan.downMs % 4);
      for (let index = 0; index < ownWrites; index++) await this.writeOnLoser(second, index);
      second.divergedImage = await run.imageOf(second);
      run.schedule(splitBrainMs, () => {
        second.divergedImage = null;
        this.keepWritingOnLoser(second, ownWrites);
        this.settled(this.rejoin(second, first, true));
      });
    });
  }

  /**
   * One block of bytes no source wrote, on the split brain's second primary: true when it was
   * acknowledged, false when refused (once it gives up its history, or stops).
   */
  private async writeOnLoser(site: Site, index: number): Promise<boolean> {
    const node = primaryNodeOf(site);
    if (!node) return false;
    const { blockBytes, volumeBlocks } = this.run.history;
    const block = (index * 7) % (volumeBlocks[0] as number);
    try {
      await node.write(0, block * blockBytes, new Uint8Array(blockBytes).fill(0xee));
      this.run.stats.splitBrainLoserWrites++;
      return true;
    } catch {
      return false;
    }
  }

  /** Writes on the loser every few milliseconds while it gives up its history, until one is refused. */
  private keepWritingOnLoser(site: Site, index: number): void {
    this.settled(
      this.writeOnLoser(site, index).then((acknowledged) => {
        if (acknowledged && !this.run.done)
          this.run.schedule(3, () => this.keepWritingOnLoser(site, index + 1));
      }),
    );
  }

  // ---- common ----

  /**
   * The new primary takes the sources. After a switchover its image must hold every acknowledged
   * write; after a failover it must be a consistent cut at least as new as what it showed as a
   * secondary, and the history forgets what it does not hold.
   */
  private async takeOver(
    plan: RoleChangePlan,
    next: Site,
    others: Site[],
    kind: 'switchover' | 'failover',
  ): Promise<void> {
    const run = this.run;
    const node = primaryNodeOf(next);
    if (!node) return;
    // Judged first, as a primary only after: the writes acknowledged so far are the old primary's.
    if (kind === 'switchover') run.sources.detach(false);
    const image = await run.imageOf(next);
    if (kind === 'switchover') {
      const problem = run.judgePrimaryImage(image, run.sources.acknowledged, run.sources.issued);
      if (problem) {
        run.violation(`${next.name} took over in a switchover without every acknowledged write: ${problem}`);
        return;
      }
    } else {
      const cut = run.cutOf(image, run.floorOf(next));
      if (cut.problem !== null) {
        run.violation(
          `${next.name} promoted to an image that is no consistent cut of the old primary's history (at least as new as the last it showed): ${cut.problem}`,
        );
        return;
      }
      run.note(
        `${next.name} promoted with writes ${cut.prefix.join(',')} of ${run.sources.issued.join(',')}`,
      );
      run.sources.survived(cut.prefix, 'failover');
    }
    run.primary = next;
    run.secondaries = others;
    for (const site of others) site.readHoldsAll = false;
    next.readHoldsAll = false;
    run.sources.attach(node);
    this.writeOn(plan);
  }

  /** The sources go on for the plan's time after the role change (or its refusal), then stop. */
  private writeOn(plan: RoleChangePlan): void {
    if (this.sourcesStopScheduled) return;
    this.sourcesStopScheduled = true;
    this.run.schedule(plan.writeMsAfter, () => this.run.stopSources());
  }

  private async admin(site: Site, verb: string, params: URLSearchParams): Promise<AdminAnswer> {
    const host = site.host;
    if (!host) return { status: 503, body: { error: `${site.name} is down` } };
    const answer = await host.runAdmin(verb, params);
    const shown = params.toString();
    this.run.note(
      `operator: cyclerep ${verb}${shown ? ` (${shown})` : ''} on ${site.name}: ${answer.status} ${JSON.stringify(answer.body)}`,
    );
    return answer;
  }

  /** Polls until `ready`, then runs `then`; a step that never ends is a finding. */
  private waitFor(
    what: string,
    ready: () => boolean,
    then: () => void | Promise<void>,
    sinceMs = this.run.now(),
  ): void {
    const run = this.run;
    if (run.done) return;
    if (ready()) {
      this.settled(Promise.resolve().then(then));
      return;
    }
    if (run.now() - sinceMs > roleChangeStepMsMax) {
      run.violation(`${what}: not done ${roleChangeStepMsMax} ms after it began: ${run.standing()}`);
      return;
    }
    run.schedule(pollMs, () => this.waitFor(what, ready, then, sinceMs));
  }

  /** A step's failure is a finding, never an unhandled rejection. */
  private settled(step: Promise<void>): void {
    step.catch((error: Error) => this.run.violation(`a role change failed: ${error.stack ?? error.message}`));
  }
}

function errorOf(answer: AdminAnswer): string {
  const body = answer.body as { error?: unknown };
  return typeof body.error === 'string' ? body.error : JSON.stringify(answer.body);
}
