/**
 * The YAML configuration of one process (DESIGN.md "Config"), validated before anything is touched.
 * An unknown key or a bad value is a ConfigError whose message names the file and the key.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError } from '../core/errors.ts';
import { limits, linkQueue } from '../core/limits.ts';
import { blockBytesProblem, namePattern, namePatternText, volumeSizeProblem } from '../core/shape.ts';
import { ackModes, resyncStagings } from '../core/types.ts';
import { assertPrivateKeyFile } from '../net/key-file.ts';
import { loadPsk } from '../net/psk.ts';
import { loadTlsMaterial } from '../net/tls.ts';
import { compressionCodecs } from '../protocol/compression.ts';
import { formatSize, parseSize } from './sizes.ts';

const name = z.string().min(1).max(limits.nameBytesMax).regex(namePattern, namePatternText);

const size = z.unknown().transform((value, context) => {
  const bytes = parseSize(value);
  if (bytes === null) {
    context.addIssue({
      code: 'custom',
      message: `expected a size such as 4096, 64KiB or 1GiB, got ${JSON.stringify(value)}`,
    });
    return z.NEVER;
  }
  return bytes;
});

/** host:port (IPv4 or a name; [v6]:port) or a Unix socket path. */
const address = z
  .string()
  .refine((value) => value.includes('/') || /^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$/.test(value), {
    message: 'expected host:port or a Unix socket path',
  });

const milliseconds = (defaultMs: number) => z.number().int().min(100).max(600_000).default(defaultMs);

/** GET /status: where, and the bounds that keep idle or slow clients from holding it. */
const http = z.strictObject({
  listen: address,
  /** Connections open at once; further ones are closed by Node until some end. */
  connectionsMax: z.number().int().min(1).max(1024).default(64),
  /** A request's headers and body must arrive within this; an idle keep-alive connection ends sooner. */
  requestTimeoutMs: milliseconds(5000),
  /**
   * HTTPS with the site's `tls` certificate; admin verbs are then taken from another machine too,
   * from a client certificate that chains to the site's CA and names one of `admins`.
   */
  tls: z.strictObject({ admins: z.array(z.string().min(1).max(253)).min(1).max(64) }).optional(),
});

/** The NBD front door: where it listens and the bounds on what clients may ask of it. */
const nbd = z.strictObject({
  listen: address,
  /** Clients in transmission at once; one more is refused when it picks an export. */
  connectionsMax: z.number().int().min(1).max(1024).default(64),
  /** Clients in the handshake at once, apart from those served; more are closed on arrival. */
  handshakesMax: z.number().int().min(1).max(1024).default(16),
  /** Greeting to transmission; a client still haggling then is closed. */
  handshakeTimeoutMs: milliseconds(10_000),
  requestsPerConnectionMax: z.number().int().min(1).max(1024).default(64),
  requestsInFlightMax: z.number().int().min(1).max(65536).default(256),
  /** Client addresses or IPv4/IPv6 subnets (a.b.c.d/n) allowed to connect; absent: any. */
  allow: z
    .array(
      z
        .string()
        .refine(
          (entry) => isIP(entry.split('/')[0] ?? '') !== 0 && /^[^/]+(\/\d{1,3})?$/.test(entry),
          'expected an IP address or a subnet such as 10.0.0.0/8',
        ),
    )
    .min(1)
    .max(256)
    .optional(),
  /** NBD_OPT_STARTTLS with the site's tls certificate: off, optional, or required of every client. */
  tls: z.enum(['off', 'optional', 'required']).default('off'),
  requestBytesMax: size
    .default(32 * 1024 * 1024)
    .refine((bytes) => bytes >= 4096 && bytes <= 32 * 1024 * 1024, 'between 4KiB and 32MiB'),
  /** Write payloads and read replies held across every client, reserved before they are read or made. */
  requestBytesInFlightMax: size
    .default(256 * 1024 * 1024)
    .refine((bytes) => bytes >= 8 * 1024 ** 2 && bytes <= 64 * 1024 ** 3, 'between 8MiB and 64GiB'),
  /** From a WRITE header to its last payload byte; a client that stalls is closed and its bytes freed. */
  requestPayloadTimeoutMs: milliseconds(30_000),
  /** Reply bytes a client has not taken beyond which its requests are not read. */
  replyBytesQueuedMax: size
    .default(64 * 1024 * 1024)
    .refine((bytes) => bytes >= 64 * 1024 && bytes <= 4 * 1024 ** 3, 'between 64KiB and 4GiB'),
  /** A client whose unsent replies make no progress for this long is closed. */
  replyTimeoutMs: milliseconds(30_000),
});

const link = z
  .strictObject({
    heartbeatMs: z.number().int().positive().default(1000),
    timeoutMs: z.number().int().positive().default(5000),
    reconnectMinMs: z.number().int().positive().default(100),
    reconnectMaxMs: z.number().int().positive().default(5000),
    cyclesInFlightMax: z.number().int().min(1).max(64).default(4),
    /** The primary fails a link whose secondary heartbeats but stores nothing sent for this long. */
    storedProgressTimeoutMs: z.number().int().positive().default(30_000),
  })
  .default({
    heartbeatMs: 1000,
    timeoutMs: 5000,
    reconnectMinMs: 100,
    reconnectMaxMs: 5000,
    cyclesInFlightMax: 4,
    storedProgressTimeoutMs: 30_000,
  });

/**
 * How the process ends, on a signal or a storage failure: NBD requests in flight get half of
 * timeoutMs to finish, the whole stop at most timeoutMs; then the process exits whatever is left.
 * After a storage failure the status endpoint keeps answering, with the fault, for faultStatusMs.
 */
const shutdown = z
  .strictObject({
    timeoutMs: z.number().int().min(100).max(600_000).default(10_000),
    faultStatusMs: z.number().int().min(0).max(600_000).default(2000),
  })
  .default({ timeoutMs: 10_000, faultStatusMs: 2000 });

const volume = z.strictObject({ name, size });

/**
 * TLS 1.3 with mutual authentication on the site link: this site's certificate and key, the CA
 * that peers' certificates must chain to, and the identities (certificate DNS names or CN) allowed
 * at the other end. Paths are relative to the working directory, like dataDir.
 */
const tls = z.strictObject({
  cert: z.string().min(1),
  key: z.string().min(1),
  ca: z.string().min(1),
  peers: z.array(z.string().min(1).max(253)).min(1).max(64),
});

const common = {
  group: name,
  dataDir: z.string().min(1),
  blockSize: size.default(4096),
  http: http.optional(),
  log: z.strictObject({ format: z.enum(['json', 'pretty']).default('json') }).optional(),
  link,
  shutdown,
  tls: tls.optional(),
  /** TLS 1.3 with a pre-shared key instead of certificates (small setups). */
  psk: z
    .strictObject({
      keyFile: z.string().min(1),
      identity: z.string().min(1).max(128).optional(),
      peers: z.array(z.string().min(1).max(128)).min(1).max(64).optional(),
    })
    .optional(),
  /** Plain TCP on a link that leaves the machine: only when said so. */
  insecure: z.boolean().default(false),
};

/** The least time between cycle switches unless configured; a secondary's config may leave it out. */
const cycleIntervalMinMsDefault = 1000;

/** How often cycles switch, and how many closed ones may wait for a connected secondary. */
const cycle = z
  .strictObject({
    intervalMinMs: z.number().int().min(0).default(cycleIntervalMinMsDefault),
    queuedMax: z.number().int().min(1).default(4),
  })
  .default({ intervalMinMs: cycleIntervalMinMsDefault, queuedMax: 4 });

const ack = z.enum(ackModes).default('immediate');

/**
 * Write pacing (docs/pacing.md): off unless configured. New writes are delayed, each by at most
 * delayMsMax, as the lag of a connected secondary goes from startFraction of lagSecondsMax to it.
 */
const pacing = z.strictObject({
  lagSecondsMax: z.number().positive().max(86_400),
  delayMsMax: z.number().positive().max(10_000).default(100),
  startFraction: z.number().gt(0).lt(1).default(0.5),
});

const journalCapacity = size.default(4 * 1024 ** 3);

/** When an away secondary's journal entries give way to a changed-block bitmap (docs/resync.md). */
const tracking = z
  .strictObject({
    enabled: z.boolean().default(true),
    journalFraction: z.number().gt(0).max(1).default(0.5),
    awaySecondsMax: z.number().min(0).default(600),
    granularity: size.default(64 * 1024),
    copyWindow: size.default(64 * 1024 ** 2),
  })
  .default({
    enabled: true,
    journalFraction: 0.5,
    awaySecondsMax: 600,
    granularity: 64 * 1024,
    copyWindow: 64 * 1024 ** 2,
  });

const secondaries = z
  .array(
    z.strictObject({
      name,
      address,
      connections: z.number().int().min(1).max(limits.connectionsPerLinkMax).default(1),
      /** Block data compressed on this link (docs/wire.md, "Compression"); off by default. */
      compression: z.enum(['off', ...compressionCodecs]).default('off'),
    }),
  )
  .max(limits.secondariesMax)
  .default([]);

/**
 * How a resync is taken (docs/resync.md). `consistent`: staged whole in the journal and applied
 * as one unit, so the image is a consistent cut at every moment and the journal's disk must hold
 * the resync. `in-place`: each cycle applied as it arrives, needing no room, and the image is NOT
 * a consistent cut until the resync ends (DRBD's SyncTarget): a disaster meanwhile leaves none.
 */
const resync = z
  .strictObject({ staging: z.enum(resyncStagings).default('consistent') })
  .default({ staging: 'consistent' });

/** Journal segments a primary with tracking needs at least (see trackingConfigOf). */
export const trackingSegmentsMin = 4;

/** The least memory.dataBytesMax may leave a primary for writes on their way to durability. */
export const writeBackBytesMin = 32 * 1024 ** 2;

const primarySchema = z.strictObject({
  ...common,
  role: z.literal('primary'),
  /**
   * Bytes of block data the site holds in memory: writes not yet durable or not yet on the
   * volumes, and per secondary its resync's copy window and the packets built ahead of its sockets.
   * The journal's index keeps references, not data (docs/storage.md, "Memory").
   */
  memory: z
    .strictObject({ dataBytesMax: size.default(256 * 1024 ** 2) })
    .default({ dataBytesMax: 256 * 1024 ** 2 }),
  volumes: z.array(volume).min(1).max(limits.volumesMax),
  cycle,
  ack,
  pacing: pacing.optional(),
  journal: z
    .strictObject({ capacity: journalCapacity, segmentSize: size.default(64 * 1024 ** 2) })
    .default({ capacity: 4 * 1024 ** 3, segmentSize: 64 * 1024 ** 2 }),
  nbd: nbd.optional(),
  tracking,
  secondaries,
  // A primary's config may carry a secondary's sections, for when it rejoins as one (docs/failover.md).
  name: name.optional(),
  listen: address.optional(),
  resync: resync.optional(),
});

const secondarySchema = z.strictObject({
  ...common,
  role: z.literal('secondary'),
  name,
  listen: address.default('127.0.0.1:7400'),
  volumes: z.array(volume).min(1).max(limits.volumesMax).optional(),
  /** The receive journal: cycles stored and not yet applied, in segment files of this size. */
  journal: z
    .strictObject({ segmentSize: size.default(64 * 1024 ** 2), capacity: journalCapacity.optional() })
    .default({ segmentSize: 64 * 1024 ** 2 }),
  /**
   * Bytes of block data the site holds in memory beyond references into its journal: received
   * packets waiting for their journal write. Past it, the site stops reading its links until the
   * journal caught up (the primary's sends wait), rather than grow.
   */
  memory: z
    .strictObject({ dataBytesMax: size.default(64 * 1024 ** 2) })
    .default({ dataBytesMax: 64 * 1024 ** 2 }),
  resync,
  nbd: nbd.optional(),
  // A secondary's config may carry a primary's sections, for when it is promoted (docs/failover.md):
  // checked here for their form, and as a whole primary's config when the site becomes one.
  cycle: cycle.optional(),
  ack: ack.optional(),
  pacing: pacing.optional(),
  tracking: tracking.optional(),
  secondaries: secondaries.optional(),
});

export type PrimaryFileConfig = z.output<typeof primarySchema>;
export type SecondaryFileConfig = z.output<typeof secondarySchema>;
export type FileConfig = PrimaryFileConfig | SecondaryFileConfig;

/** Validates a parsed document; `source` names it in messages (a path, or "config"). */
export function validateConfig(document: unknown, source = 'config'): FileConfig {
  const role = (document as { role?: unknown } | null)?.role;
  if (role !== 'primary' && role !== 'secondary') {
    throw new ConfigError(`${source}: role: expected "primary" or "secondary", got ${JSON.stringify(role)}`);
  }
  const schema = role === 'primary' ? primarySchema : secondarySchema;
  const result = schema.safeParse(document);
  if (!result.success) {
    const lines = result.error.issues.map((issue) => `${source}: ${describeIssue(issue, document)}`);
    throw new ConfigError(lines.join('\n'));
  }
  checkRelations(result.data, source);
  return result.data;
}

/**
 * Keys renamed so that every bound reads the same way (a bound ends in Max or Min, followed by Ms
 * when it is a duration); an old configuration is refused with the new name in the message.
 */
const renamedKeys: Record<string, string> = {
  minMs: 'intervalMinMs',
  maxQueued: 'queuedMax',
  cyclesInFlight: 'cyclesInFlightMax',
  requestsInFlightPerConnection: 'requestsPerConnectionMax',
  requestsInFlightTotal: 'requestsInFlightMax',
  requestSizeMax: 'requestBytesMax',
};

function describeIssue(issue: z.core.$ZodIssue, document: unknown): string {
  const where = issue.path.length > 0 ? issue.path.join('.') : '(top level)';
  if (issue.code === 'unrecognized_keys') {
    const named = issue.keys.map((key) =>
      Object.hasOwn(renamedKeys, key) ? `"${key}" (renamed ${renamedKeys[key]})` : `"${key}"`,
    );
    return `${where}: unknown key${issue.keys.length > 1 ? 's' : ''} ${named.join(', ')}`;
  }
  const given = valueAt(document, issue.path);
  if (given === undefined) return `${where}: missing`;
  if (issue.code === 'invalid_type')
    return `${where}: expected ${issue.expected}, got ${JSON.stringify(given)}`;
  return `${where}: ${issue.message}`;
}

function valueAt(document: unknown, path: readonly PropertyKey[]): unknown {
  let value = document;
  for (const key of path) {
    if (value === null || typeof value !== 'object') return undefined;
    value = (value as Record<PropertyKey, unknown>)[key];
  }
  return value;
}

/** What the schema cannot say alone: sizes against the block size, names that must differ. */
function checkRelations(config: FileConfig, source: string): void {
  const problems: string[] = [];
  const block = config.blockSize;
  const blockProblem = blockBytesProblem(block);
  if (blockProblem) problems.push(`blockSize: ${blockProblem}`);
  const volumes = config.volumes ?? [];
  volumes.forEach((volume, index) => {
    const sizeProblem = volumeSizeProblem(volume.size, block);
    if (sizeProblem) problems.push(`volumes.${index}.size: ${sizeProblem}`);
  });
  const names = volumes.map((volume) => volume.name);
  if (new Set(names).size !== names.length) problems.push('volumes: two volumes share a name');
  if (config.link.timeoutMs < 2 * config.link.heartbeatMs)
    problems.push('link.timeoutMs: must be at least twice link.heartbeatMs');
  if (config.link.storedProgressTimeoutMs < config.link.timeoutMs)
    problems.push('link.storedProgressTimeoutMs: must be at least link.timeoutMs');
  if (config.link.reconnectMaxMs < config.link.reconnectMinMs)
    problems.push('link.reconnectMaxMs: below link.reconnectMinMs');
  problems.push(...checkLinkSecurity(config));
  if (config.nbd && config.nbd.requestBytesInFlightMax < config.nbd.requestBytesMax)
    problems.push(
      'nbd.requestBytesInFlightMax: below nbd.requestBytesMax, so the largest request could never be served',
    );
  if (config.nbd && config.nbd.tls !== 'off' && !config.tls)
    problems.push(`nbd.tls: ${config.nbd.tls} needs the tls section (its cert and key serve STARTTLS)`);
  if (config.http?.tls && !config.tls)
    problems.push(
      "http.tls: needs the tls section (its cert and key serve HTTPS, its CA checks admins' client certificates)",
    );
  if (config.journal.segmentSize < limits.frameBytesMax) {
    problems.push(
      `journal.segmentSize: at least ${limits.frameBytesMax} bytes, so that the largest record fits`,
    );
  }
  if (config.role === 'secondary' && config.memory.dataBytesMax < limits.packetBytesMax)
    problems.push(`memory.dataBytesMax: at least ${limits.packetBytesMax} bytes, so that one packet fits`);
  if (config.role === 'primary') {
    const secondaryNames = config.secondaries.map((secondary) => secondary.name);
    if (new Set(secondaryNames).size !== secondaryNames.length)
      problems.push('secondaries: two secondaries share a name');
    if (config.journal.segmentSize > config.journal.capacity)
      problems.push('journal.segmentSize: larger than journal.capacity');
    if (config.tracking.enabled && config.journal.capacity < trackingSegmentsMin * config.journal.segmentSize)
      problems.push(
        `journal.capacity: at least ${trackingSegmentsMin} x journal.segmentSize with tracking enabled, so that tracking frees whole segments before the journal is full (or tracking: { enabled: false })`,
      );
    if (config.tracking.granularity % config.blockSize !== 0)
      problems.push(
        `tracking.granularity: ${config.tracking.granularity} is not whole blocks of ${config.blockSize}`,
      );
    const linksBytes = config.secondaries.length * linkDataBytes(config);
    if (writeBackBytesMax(config) < writeBackBytesMin)
      problems.push(
        `memory.dataBytesMax: ${formatSize(config.memory.dataBytesMax)} must hold the copy windows and packet queues of ${config.secondaries.length === 1 ? 'its secondary' : `its ${config.secondaries.length} secondaries`} (${formatSize(linksBytes)}) and at least ${formatSize(writeBackBytesMin)} for writes on their way to the volumes: raise it to at least ${formatSize(linksBytes + writeBackBytesMin)}, or lower tracking.copyWindow`,
      );
    if (config.tracking.copyWindow < Math.max(config.tracking.granularity, limits.packetBytesMax))
      problems.push(
        `tracking.copyWindow: at least tracking.granularity and ${limits.packetBytesMax} bytes, so that one copy read fits`,
      );
  }
  problems.push(...checkPacing(config));
  if (problems.length > 0)
    throw new ConfigError(problems.map((problem) => `${source}: ${problem}`).join('\n'));
}

/**
 * A secondary that keeps up still lags by up to a cycle or two (the oldest write of the capture
 * cycle waits for the switch, then for the send): pacing that starts below two cycle intervals
 * would delay writes all the time, and a ramp from the start to the bound shorter than one interval
 * would swing between no delay and the longest at every stored cycle.
 */
function checkPacing(config: FileConfig): string[] {
  if (!config.pacing) return [];
  const { lagSecondsMax, startFraction } = config.pacing;
  const intervalMs = config.cycle?.intervalMinMs ?? cycleIntervalMinMsDefault;
  const intervalSeconds = intervalMs / 1000;
  const leastSeconds = Math.max((2 * intervalSeconds) / startFraction, intervalSeconds / (1 - startFraction));
  // A thousandth of a millisecond of slack: 0.3 x 2 must not fail against 2 x 0.3.
  if (lagSecondsMax >= leastSeconds - 1e-6) return [];
  const startSeconds = lagSecondsMax * startFraction;
  const why =
    startSeconds < 2 * intervalSeconds - 1e-6
      ? `delays writes from a lag of ${roundUp(startSeconds)} s, below two cycle intervals (cycle.intervalMinMs ${intervalMs} ms), the lag of a secondary that keeps up`
      : `ramps up over ${roundUp(lagSecondsMax - startSeconds)} s, less than one cycle interval (cycle.intervalMinMs ${intervalMs} ms), so the delay would swing from none to the longest as each cycle is stored`;
  return [
    `pacing.lagSecondsMax: ${lagSecondsMax} s with startFraction ${startFraction} ${why}: raise it to at least ${roundUp(leastSeconds)} s, or lower cycle.intervalMinMs`,
  ];
}

/** Up to the next thousandth, so that a figure suggested in a message is accepted when used. */
function roundUp(value: number): number {
  return Math.ceil(value * 1000 - 1e-9) / 1000;
}

/**
 * Bytes of block data one secondary may make the primary hold: its resync's copy window, and the
 * packets built ahead of what its sockets take (one more packet while the last is built).
 */
export function linkDataBytes(config: PrimaryFileConfig): number {
  return config.tracking.copyWindow + linkQueue.bytesLow + limits.packetBytesMax;
}

/** What memory.dataBytesMax leaves for writes not yet durable or not yet on the volumes. */
export function writeBackBytesMax(config: PrimaryFileConfig): number {
  return config.memory.dataBytesMax - config.secondaries.length * linkDataBytes(config);
}

/**
 * Without `tls`, a site link must stay on this machine (loopback or a Unix socket) unless
 * `insecure: true` says otherwise; with `tls`, its files must be readable now.
 */
function checkLinkSecurity(config: FileConfig): string[] {
  if (config.tls) {
    const problems: string[] = [];
    const unreadable = (['cert', 'key', 'ca'] as const).filter((key) => {
      try {
        readFileSync(config.tls?.[key] as string);
        return false;
      } catch (cause) {
        problems.push(`tls.${key}: cannot read ${config.tls?.[key]}: ${(cause as Error).message}`);
        return true;
      }
    });
    if (unreadable.length === 0) {
      try {
        assertPrivateKeyFile(config.tls.key);
        try {
          loadTlsMaterial(config.tls);
        } catch (cause) {
          problems.push(`tls: ${(cause as Error).message}`);
        }
      } catch (cause) {
        problems.push(`tls.key: ${(cause as Error).message}`);
      }
    }
    if (config.insecure) problems.push('insecure: true and a tls section contradict each other');
    if (config.psk) problems.push('psk: choose tls (certificates) or psk, not both');
    return problems;
  }
  if (config.psk) {
    const problems: string[] = [];
    try {
      loadPsk(config.psk);
    } catch (cause) {
      problems.push(`psk.keyFile: ${(cause as Error).message}`);
    }
    if (config.insecure) problems.push('insecure: true and a psk section contradict each other');
    if (config.role === 'primary' && !config.psk.identity)
      problems.push('psk.identity: missing (the name this primary presents)');
    if (config.role === 'secondary' && !config.psk.peers)
      problems.push('psk.peers: missing (the primaries allowed)');
    if (config.nbd && config.nbd.tls !== 'off')
      problems.push('nbd.tls: needs a tls section (certificates), not psk');
    return problems;
  }
  if (config.insecure) return [];
  const addresses =
    config.role === 'primary'
      ? config.secondaries.map(
          (secondary, index) => [`secondaries.${index}.address`, secondary.address] as const,
        )
      : [['listen', config.listen] as const];
  return addresses
    .filter(([, address]) => !isLocalAddress(address))
    .map(
      ([key, address]) =>
        `${key}: ${address} leaves this machine without TLS; add a tls (or psk) section, or insecure: true to accept plain TCP`,
    );
}

/** Loopback addresses and Unix socket paths: a link that cannot leave the machine. */
export function isLocalAddress(address: string): boolean {
  if (address.includes('/')) return true;
  const host = address.slice(0, address.lastIndexOf(':')).replace(/^\[|\]$/g, '');
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** A configuration file as loaded: validated for its role, and its document for the other role's view. */
export interface LoadedConfig {
  config: FileConfig;
  document: unknown;
  /** The file's path, naming it in messages. */
  source: string;
}

/** Reads and validates a YAML file. */
export function loadConfig(path: string): FileConfig {
  return loadConfigFile(path).config;
}

/**
 * The configuration of a site in a role other than its file's: a promoted secondary runs as a
 * primary, a rejoined primary as a secondary (docs/failover.md). The document is validated whole as
 * that role's file would be; a primary's volumes, when the file names none, are the site's own.
 */
export function configInRole(
  loaded: LoadedConfig,
  role: 'primary' | 'secondary',
  siteVolumes: { name: string; size: number }[],
): FileConfig {
  const document: Record<string, unknown> = { ...(loaded.document as Record<string, unknown>), role };
  if (role === 'primary' && document.volumes === undefined) document.volumes = siteVolumes;
  return validateConfig(document, `${loaded.source} (as a ${role})`);
}

/** Reads and validates a YAML file, keeping its document. */
export function loadConfigFile(path: string): LoadedConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (cause) {
    throw new ConfigError(`${path}: cannot read: ${(cause as Error).message}`);
  }
  let document: unknown;
  try {
    document = parseYaml(text, { uniqueKeys: true });
  } catch (cause) {
    throw new ConfigError(`${path}: not valid YAML: ${(cause as Error).message}`);
  }
  return { config: validateConfig(document, path), document, source: path };
}
