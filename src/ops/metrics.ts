/**
 * Prometheus metrics of one site, served as `GET /metrics` by the status server. Most figures are
 * read from the site's status at scrape time (one source of truth with `/status`); latencies, cycle
 * sizes and NBD requests are observed as they happen through `SiteMetrics`. Each site has its own
 * registry, so several sites in one process (the demo, a library user) never mix their figures.
 *
 * Names follow Prometheus' conventions: `cyclerep_` prefix, base units (bytes, seconds), `_total`
 * for counters. docs/operations.md lists them with alert rules and a scrape configuration.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { SecondaryStatus } from '../core/primary-group.ts';
import type { LinkState } from '../core/primary-link.ts';

/** What a primary's status gives the metrics; a subset of PrimaryNodeStatus. */
export interface PrimaryMetricsStatus {
  role: 'primary';
  capture: number;
  closed: number;
  collected: number;
  writtenBytes: number;
  journalBytes: number;
  journalDiskBytes: number;
  journalCapacityBytes: number;
  fault?: { kind: string } | null;
  /** Write pacing's figures; null or absent without pacing. */
  pacing?: { delayMs: number; saturated: boolean; writesDelayed: number; delaySeconds: number } | null;
  secondaries: Pick<
    SecondaryStatus,
    | 'name'
    | 'link'
    | 'stored'
    | 'applied'
    | 'lagCycles'
    | 'lagBytes'
    | 'lagSeconds'
    | 'shippedBytes'
    | 'failures'
    | 'recoveries'
  >[];
}

/** What a secondary's status gives the metrics; a subset of SecondaryStatusReport. */
export interface SecondaryMetricsStatus {
  role: 'secondary';
  link: string;
  stored: number;
  applied: number;
  journalBytes: number;
  /** The exposed image is a consistent cut (false during an in-place resync). */
  consistent: boolean;
  fault?: { kind: string } | null;
}

export type MetricsStatus = PrimaryMetricsStatus | SecondaryMetricsStatus;

/** Every state a link can be in, on either site: one gauge per state, 1 for the current one. */
export const linkStates = [
  'idle',
  'connecting',
  'streaming',
  'refused',
] as const satisfies readonly LinkState[];

const latencyBuckets = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
];
const cycleBytesBuckets = [4096, 65536, 1 << 20, 4 << 20, 16 << 20, 64 << 20, 256 << 20, 1 << 30];

export class SiteMetrics {
  readonly registry = new Registry();
  private readonly writeSeconds: Histogram;
  private readonly flushSeconds: Histogram;
  private readonly cycleBytes: Histogram;
  private readonly nbdRequests: Counter;
  private readonly nbdErrors: Counter;

  constructor(
    readonly role: MetricsStatus['role'],
    status: () => MetricsStatus,
    /** The process's own figures (CPU, memory, event loop): off where many sites share a process. */
    options: { processMetrics?: boolean } = {},
  ) {
    if (options.processMetrics !== false)
      collectDefaultMetrics({ register: this.registry, prefix: 'cyclerep_' });
    const registers = [this.registry];
    this.writeSeconds = new Histogram({
      name: 'cyclerep_write_seconds',
      help: 'Time from a write arriving to its acknowledgement (ack mode included)',
      buckets: latencyBuckets,
      registers,
    });
    this.flushSeconds = new Histogram({
      name: 'cyclerep_flush_seconds',
      help: 'Time from a flush arriving to its answer (everything before it durable)',
      buckets: latencyBuckets,
      registers,
    });
    this.cycleBytes = new Histogram({
      name: 'cyclerep_cycle_written_bytes',
      help: 'Bytes written by the sources into each closed cycle, before folding',
      buckets: cycleBytesBuckets,
      registers,
    });
    this.nbdRequests = new Counter({
      name: 'cyclerep_nbd_requests_total',
      help: 'NBD requests answered, by command',
      labelNames: ['command'],
      registers,
    });
    this.nbdErrors = new Counter({
      name: 'cyclerep_nbd_errors_total',
      help: 'NBD requests answered with an error, by command and NBD error name',
      labelNames: ['command', 'code'],
      registers,
    });
    registerStatusMetrics(this.registry, role, status);
  }

  observeWrite(seconds: number): void {
    this.writeSeconds.observe(seconds);
  }

  observeFlush(seconds: number): void {
    this.flushSeconds.observe(seconds);
  }

  observeCycleClosed(writtenBytes: number): void {
    this.cycleBytes.observe(writtenBytes);
  }

  observeNbdRequest(command: string, errorCode: string | null): void {
    this.nbdRequests.inc({ command });
    if (errorCode) this.nbdErrors.inc({ command, code: errorCode });
  }

  /** The text exposition format, and its content type. */
  async exposition(): Promise<{ body: string; contentType: string }> {
    return { body: await this.registry.metrics(), contentType: this.registry.contentType };
  }
}

type Sample = [labels: Record<string, string>, value: number];

/** A figure read from the status: its samples, or none on a site of the other role. */
interface StatusMetric {
  name: string;
  help: string;
  kind: 'gauge' | 'counter';
  roles: MetricsStatus['role'][];
  labelNames: string[];
  samples: (site: MetricsStatus) => Sample[];
}

const primaryOnly =
  (read: (site: PrimaryMetricsStatus) => number) =>
  (site: MetricsStatus): Sample[] =>
    site.role === 'primary' ? [[{}, read(site)]] : [];
const secondaryOnly =
  (read: (site: SecondaryMetricsStatus) => number) =>
  (site: MetricsStatus): Sample[] =>
    site.role === 'secondary' ? [[{}, read(site)]] : [];
type LinkStatus = PrimaryMetricsStatus['secondaries'][number];
const perSecondary =
  (read: (link: LinkStatus) => number) =>
  (site: MetricsStatus): Sample[] =>
    site.role === 'primary' ? site.secondaries.map((link) => [{ secondary: link.name }, read(link)]) : [];
/** A pacing figure; a primary without pacing reads 0 (prom-client shows an unlabelled figure without samples as 0). */
const pacingFigure =
  (read: (pacing: NonNullable<PrimaryMetricsStatus['pacing']>) => number) =>
  (site: MetricsStatus): Sample[] =>
    site.role === 'primary' && site.pacing ? [[{}, read(site.pacing)]] : [];
const stateSamples = (link: string, labels: Record<string, string>): Sample[] =>
  linkStates.map((state) => [{ ...labels, state }, link === state ? 1 : 0]);

const statusMetrics: StatusMetric[] = [
  {
    name: 'cyclerep_up',
    roles: ['primary', 'secondary'],
    help: 'The site runs without a storage fault (1) or has failed (0)',
    kind: 'gauge',
    labelNames: [],
    samples: (site) => [[{}, site.fault ? 0 : 1]],
  },
  {
    name: 'cyclerep_journal_bytes',
    roles: ['primary', 'secondary'],
    help: 'Payload bytes held in the journal',
    kind: 'gauge',
    labelNames: [],
    samples: (site) => [[{}, site.journalBytes]],
  },
  {
    name: 'cyclerep_stored_cycle',
    roles: ['secondary'],
    help: 'Secondary: the highest cycle stored (complete and durable)',
    kind: 'gauge',
    labelNames: [],
    samples: secondaryOnly((site) => site.stored),
  },
  {
    name: 'cyclerep_applied_cycle',
    roles: ['secondary'],
    help: 'Secondary: the cycle its volumes show',
    kind: 'gauge',
    labelNames: [],
    samples: secondaryOnly((site) => site.applied),
  },
  {
    name: 'cyclerep_image_consistent',
    roles: ['secondary'],
    help: 'Secondary: its exposed image is a consistent cut (1), or an in-place resync is under way (0)',
    kind: 'gauge',
    labelNames: [],
    samples: secondaryOnly((site) => (site.consistent ? 1 : 0)),
  },
  {
    name: 'cyclerep_link_state',
    roles: ['secondary'],
    help: 'Secondary: 1 for the state of its link to the primary',
    kind: 'gauge',
    labelNames: ['state'],
    samples: (site) => (site.role === 'secondary' ? stateSamples(site.link, {}) : []),
  },
  {
    name: 'cyclerep_capture_cycle',
    roles: ['primary'],
    help: 'Primary: the open cycle new writes join',
    kind: 'gauge',
    labelNames: [],
    samples: primaryOnly((site) => site.capture),
  },
  {
    name: 'cyclerep_closed_cycle',
    roles: ['primary'],
    help: 'Primary: the newest closed cycle',
    kind: 'gauge',
    labelNames: [],
    samples: primaryOnly((site) => site.closed),
  },
  {
    name: 'cyclerep_collected_cycle',
    roles: ['primary'],
    help: 'Primary: cycles up to here were stored by every secondary and collected',
    kind: 'gauge',
    labelNames: [],
    samples: primaryOnly((site) => site.collected),
  },
  {
    name: 'cyclerep_written_bytes_total',
    roles: ['primary'],
    help: 'Primary: bytes the sources wrote since start, zero runs included',
    kind: 'counter',
    labelNames: [],
    samples: primaryOnly((site) => site.writtenBytes),
  },
  {
    name: 'cyclerep_journal_disk_bytes',
    roles: ['primary'],
    help: 'Primary: bytes of the journal segment files',
    kind: 'gauge',
    labelNames: [],
    samples: primaryOnly((site) => site.journalDiskBytes),
  },
  {
    name: 'cyclerep_journal_capacity_bytes',
    roles: ['primary'],
    help: 'Primary: journal.capacity',
    kind: 'gauge',
    labelNames: [],
    samples: primaryOnly((site) => site.journalCapacityBytes),
  },
  {
    name: 'cyclerep_secondary_link_state',
    roles: ['primary'],
    help: 'Primary: 1 for the state each secondary link is in',
    kind: 'gauge',
    labelNames: ['secondary', 'state'],
    samples: (site) =>
      site.role === 'primary'
        ? site.secondaries.flatMap((link) => stateSamples(link.link, { secondary: link.name }))
        : [],
  },
  {
    name: 'cyclerep_secondary_stored_cycle',
    roles: ['primary'],
    help: 'Primary: the highest cycle each secondary stored',
    kind: 'gauge',
    labelNames: ['secondary'],
    samples: perSecondary((link) => link.stored),
  },
  {
    name: 'cyclerep_secondary_applied_cycle',
    roles: ['primary'],
    help: 'Primary: the cycle each secondary last reported applied',
    kind: 'gauge',
    labelNames: ['secondary'],
    samples: perSecondary((link) => link.applied),
  },
  {
    name: 'cyclerep_secondary_lag_cycles',
    roles: ['primary'],
    help: 'Primary: closed cycles each secondary has not stored',
    kind: 'gauge',
    labelNames: ['secondary'],
    samples: perSecondary((link) => link.lagCycles),
  },
  {
    name: 'cyclerep_secondary_lag_bytes',
    roles: ['primary'],
    help: 'Primary: acknowledged bytes each secondary has not stored, capture cycle included',
    kind: 'gauge',
    labelNames: ['secondary'],
    samples: perSecondary((link) => link.lagBytes),
  },
  {
    name: 'cyclerep_secondary_lag_seconds',
    roles: ['primary'],
    help: 'Primary: age of the oldest write each secondary has not stored',
    kind: 'gauge',
    labelNames: ['secondary'],
    samples: perSecondary((link) => link.lagSeconds),
  },
  {
    name: 'cyclerep_pacing_delay_seconds',
    roles: ['primary'],
    help: 'Primary: the pacing delay a write arriving now waits (0: not delaying)',
    kind: 'gauge',
    labelNames: [],
    samples: pacingFigure((pacing) => pacing.delayMs / 1000),
  },
  {
    name: 'cyclerep_pacing_saturated',
    roles: ['primary'],
    help: 'Primary: 1 while the lag pacing acts on is at pacing.lagSecondsMax (every write waits the longest delay)',
    kind: 'gauge',
    labelNames: [],
    samples: pacingFigure((pacing) => (pacing.saturated ? 1 : 0)),
  },
  {
    name: 'cyclerep_pacing_delayed_writes_total',
    roles: ['primary'],
    help: 'Primary: writes that waited out a pacing delay',
    kind: 'counter',
    labelNames: [],
    samples: pacingFigure((pacing) => pacing.writesDelayed),
  },
  {
    name: 'cyclerep_pacing_added_seconds_total',
    roles: ['primary'],
    help: 'Primary: pacing delay added to writes in all',
    kind: 'counter',
    labelNames: [],
    samples: pacingFigure((pacing) => pacing.delaySeconds),
  },
  {
    name: 'cyclerep_secondary_shipped_bytes_total',
    roles: ['primary'],
    help: 'Primary: block data sent to each secondary, resends included',
    kind: 'counter',
    labelNames: ['secondary'],
    samples: perSecondary((link) => link.shippedBytes),
  },
  {
    name: 'cyclerep_secondary_link_failures_total',
    roles: ['primary'],
    help: 'Primary: failures of each secondary link',
    kind: 'counter',
    labelNames: ['secondary'],
    samples: perSecondary((link) => link.failures),
  },
  {
    name: 'cyclerep_secondary_recoveries_total',
    roles: ['primary'],
    help: 'Primary: recovery cycles sent to each secondary',
    kind: 'counter',
    labelNames: ['secondary'],
    samples: perSecondary((link) => link.recoveries),
  },
];

/** How long one status read serves the metrics of a scrape, so that they agree with each other. */
const statusReuseMs = 100;

/** Gauges and counters whose values are read from the status at each scrape. */
function registerStatusMetrics(
  registry: Registry,
  role: MetricsStatus['role'],
  status: () => MetricsStatus,
): void {
  let cached: { atMs: number; site: MetricsStatus } | null = null;
  const read = (): MetricsStatus => {
    const nowMs = Date.now();
    if (!cached || nowMs - cached.atMs > statusReuseMs) cached = { atMs: nowMs, site: status() };
    return cached.site;
  };
  // A site registers only the figures of its role: an unset gauge would otherwise read as 0.
  for (const metric of statusMetrics.filter((candidate) => candidate.roles.includes(role))) {
    const options = {
      name: metric.name,
      help: metric.help,
      labelNames: metric.labelNames,
      registers: [registry],
    };
    if (metric.kind === 'gauge') {
      new Gauge({
        ...options,
        collect() {
          this.reset();
          for (const [labels, value] of metric.samples(read())) this.set(labels, value);
        },
      });
    } else {
      // A running total kept by the site: the counter is set to it, from zero, at each scrape.
      new Counter({
        ...options,
        collect() {
          this.reset();
          for (const [labels, value] of metric.samples(read())) this.inc(labels, Math.max(0, value));
        },
      });
    }
  }
}
