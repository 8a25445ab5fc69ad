// Proves the readable view of `cyclerep status`: a line for the site and one per link in the
// manner of `drbdadm status`, every link state a secondary can be in, faults and a full journal
// called out, colour only when asked for (a terminal), and a catch-up bar under --watch.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { bar, bytes, describe, type SiteStatus } from '../../src/cli/status.ts';

/** The start of an ANSI colour sequence. */
const ansi = '\u001b[';

const link = (name: string, state: string, lag: Partial<{ lagCycles: number; lagBytes: number }> = {}) => ({
  name,
  link: state,
  stored: 40,
  applied: 39,
  lagCycles: lag.lagCycles ?? 2,
  lagBytes: lag.lagBytes ?? 3 * 1024 * 1024,
  lagSeconds: 1.7,
  failures: state === 'streaming' ? 0 : 3,
  recoveries: 1,
  lastFailure: state === 'streaming' ? null : 'no frame for 5000 ms',
});

const primary: SiteStatus = {
  group: 'demo',
  role: 'primary',
  capture: 42,
  closed: 41,
  journalBytes: 1 << 20,
  journalDiskBytes: 2 << 20,
  journalCapacityBytes: 1 << 30,
  journalFull: false,
  fault: null,
  secondaries: ['streaming', 'connecting', 'idle', 'refused'].map((state, i) => link(`dr${i + 1}`, state)),
};

test('a primary shows one line for itself and one per secondary, whatever state each link is in', () => {
  const text = describe(primary);
  const lines = text.trimEnd().split('\n');
  assert.equal(lines[0], 'demo role:primary capture:42 closed:41 journal:2.0 MiB/1.0 GiB (0%)');
  assert.equal(
    lines[1],
    '  dr1 link:streaming stored:40 applied:39 lag:2 cycles, 3.0 MiB, 1.7 s recoveries:1',
  );
  for (const state of ['connecting', 'idle', 'refused'])
    assert.match(
      text,
      new RegExp(
        `link:${state} stored:40 applied:39 lag:2 cycles, 3\\.0 MiB, 1\\.7 s failures:3 recoveries:1\\n {4}last failure: no frame for 5000 ms`,
      ),
    );
  assert.ok(!text.includes(ansi), 'no colour unless asked');
});

test('colour marks streaming green, connecting and idle yellow, refused red', () => {
  const text = describe(primary, { colour: true });
  assert.ok(text.includes(`link:${ansi}32mstreaming${ansi}0m`), 'streaming');
  assert.ok(text.includes(`link:${ansi}33mconnecting${ansi}0m`), 'connecting');
  assert.ok(text.includes(`link:${ansi}33midle${ansi}0m`), 'idle');
  assert.ok(text.includes(`link:${ansi}31mrefused${ansi}0m`), 'refused');
});

test('a full journal and a storage fault are called out on the site line', () => {
  const text = describe({
    ...primary,
    journalFull: true,
    fault: { kind: 'disk-full', message: 'ENOSPC writing 0000000000000003.seg' },
  });
  assert.match(
    text.split('\n')[0] ?? '',
    / FULL: writes wait {2}FAULT disk-full: ENOSPC writing 0000000000000003\.seg$/,
  );
});

test('a compressing link shows its codec and ratio on its line', () => {
  const [first, ...others] = primary.secondaries ?? [];
  const compressing = {
    ...primary,
    secondaries: [
      { ...first, compression: { codec: 'brotli', payloadBytes: 3 << 20, sentBytes: 1 << 20, ratio: 3 } },
      ...others,
    ],
  } as SiteStatus;
  assert.match(
    describe(compressing),
    /dr1 link:streaming .* compression:brotli 3\.00x \(3\.0 MiB as 1\.0 MiB\)\n/,
  );
  assert.equal(describe(primary).includes('compression'), false);
});

test('write pacing gets a line: idle, delaying (yellow), and at its bound (red), with what it added', () => {
  const pacing = {
    lagSecondsMax: 30,
    delayMsMax: 100,
    delayMs: 0,
    pacedBy: 'dr1',
    lagSeconds: 2,
    saturated: false,
    writesDelayed: 1234,
    delaySeconds: 56.7,
  };
  assert.equal(describe(primary).includes('pacing'), false, 'no line without pacing');
  const idle = describe({ ...primary, pacing }).split('\n')[1];
  assert.equal(
    idle,
    '  pacing: not delaying; 1234 writes delayed, 56.7 s added in all (delay at most 100 ms)',
  );
  const delaying = describe({ ...primary, pacing: { ...pacing, delayMs: 42, lagSeconds: 21.4 } });
  assert.match(delaying, /pacing: delaying writes 42 ms \(dr1 lags 21\.4 s of 30 s\);/);
  const bound = describe(
    { ...primary, pacing: { ...pacing, delayMs: 100, lagSeconds: 31, saturated: true } },
    { colour: true },
  );
  assert.ok(bound.includes(`${ansi}31m`), 'red at the bound');
  assert.match(bound, /AT THE BOUND: every write waits the longest delay/);
  const bypassed = describe({ ...primary, pacing: { ...pacing, writesUndelayed: 7 } });
  assert.match(bypassed, /, 7 let through undelayed \(too many waiting\)$/m);
});

test('a fenced primary says so on a FENCED line: who superseded it, from which cycle, since when', () => {
  const fenced = {
    site: 'b'.repeat(32),
    generation: '7'.repeat(32),
    startedAt: 120,
    at: '2026-11-26T10:00:00.000Z',
  };
  const lines = describe({ ...primary, fenced }).split('\n');
  assert.equal(
    lines[1],
    `  FENCED since 2026-11-26T10:00:00.000Z: superseded by site ${'b'.repeat(32)}, generation ${'7'.repeat(32)}, from cycle 120 on; writes are refused (NBD: EPERM)`,
  );
  assert.ok(describe({ ...primary, fenced }, { colour: true }).includes(`${ansi}31mFENCED since`), 'in red');
  assert.ok(!describe(primary).includes('FENCED'), 'no FENCED line while it leads');
  assert.ok(!describe({ ...primary, fenced: null }).includes('FENCED'));
});

test('a secondary shows its cycles, journal and the state of its link to the primary', () => {
  for (const state of ['streaming', 'idle']) {
    const text = describe({
      group: 'demo',
      role: 'secondary',
      name: 'dr1',
      link: state,
      stored: 9,
      applied: 8,
      journalBytes: 4096,
    });
    assert.equal(
      text,
      `demo/dr1 role:secondary stored:9 applied:8 journal:4.0 KiB\n  primary link:${state}\n`,
    );
  }
});

test('a secondary says when its image is not consistent, and when it refused a resync for want of room', () => {
  const base = {
    group: 'demo',
    role: 'secondary',
    name: 'dr1',
    link: 'idle',
    stored: 9,
    applied: 7,
  } as const;
  const inconsistent = describe({
    ...base,
    consistent: false,
    inconsistentSince: '2026-11-26T10:00:00.000Z',
  });
  assert.match(
    inconsistent.split('\n')[2] ?? '',
    /^ {2}IMAGE NOT CONSISTENT since 2026-11-26T10:00:00\.000Z: an in-place resync/,
  );
  const refused = describe({
    ...base,
    consistent: true,
    staging: {
      mode: 'consistent',
      stagedBytes: 3 * 1024 ** 3,
      shortage: {
        stagedBytes: 3 * 1024 ** 3,
        freeBytes: 60 * 1024 ** 2,
        freeBytesMin: 64 * 1024 ** 2,
        volumeBytes: 16 * 1024 ** 3,
      },
    },
  });
  assert.equal(
    refused.split('\n')[2],
    '  RESYNC REFUSED: no room to stage 3.0 GiB staged, 60.0 MiB free (64.0 MiB kept free), up to 16.0 GiB may be needed: free room, or resync.staging: in-place',
  );
  assert.equal(
    describe({ ...base, consistent: true }).split('\n').length,
    3,
    'nothing more while all is well',
  );
});

test('under --watch a secondary behind by more than a cycle gets a catch-up bar from its largest lag', () => {
  const peaks = new Map<string, number>();
  const behind = (lagBytes: number) => ({
    ...primary,
    secondaries: [link('dr1', 'streaming', { lagCycles: 5, lagBytes })],
  });
  assert.match(describe(behind(800), { colour: false }, peaks), /catch-up \[\.{20}\] 0%/);
  assert.match(describe(behind(200), { colour: false }, peaks), /catch-up \[#{15}\.{5}\] 75%/);
  const caughtUp = { ...primary, secondaries: [link('dr1', 'streaming', { lagCycles: 1, lagBytes: 10 })] };
  assert.doesNotMatch(describe(caughtUp, { colour: false }, peaks), /catch-up/);
});

test("each secondary's mode is shown; a resync shows bytes copied, bytes left and a bar", () => {
  const text = describe({
    ...primary,
    secondaries: [
      { ...link('dr1', 'streaming'), mode: 'streaming', resyncBytesLeft: 0, resyncBytesCopied: 0 },
      { ...link('dr2', 'connecting'), mode: 'tracking', resyncBytesLeft: 8 << 20, resyncBytesCopied: 0 },
      { ...link('dr3', 'streaming'), mode: 'resync', resyncBytesLeft: 3 << 20, resyncBytesCopied: 1 << 20 },
    ],
  });
  const lines = text.trimEnd().split('\n');
  assert.match(lines[1] ?? '', /^ {2}dr1 link:streaming mode:streaming stored:40 /);
  assert.match(lines[2] ?? '', /^ {2}dr2 link:connecting mode:tracking stored:40 /);
  assert.match(lines[4] ?? '', /^ {2}dr3 link:streaming mode:resync stored:40 /);
  assert.equal(lines[5], '    resync [#####...............] 25% copied 1.0 MiB, left 3.0 MiB');
  assert.equal(lines.filter((line) => line.includes('resync [')).length, 1, 'a bar only during a resync');
  const coloured = describe(
    { ...primary, secondaries: [{ ...link('dr1', 'streaming'), mode: 'tracking' }] },
    {
      colour: true,
    },
  );
  assert.ok(coloured.includes(`mode:${ansi}33mtracking${ansi}0m`), 'a secondary not streaming is yellow');
});

test('sizes and bars read as people expect', () => {
  assert.equal(bytes(512), '512 B');
  assert.equal(bytes(1536), '1.5 KiB');
  assert.equal(bytes(5 * 1024 ** 3), '5.0 GiB');
  assert.equal(bar(0.5, 10), '[#####.....] 50%');
  assert.equal(bar(1.2, 4), '[####] 100%');
});

test('a resync shows its rate and ETA beside the bar; an unknown ETA is a question mark', () => {
  const resyncing = (rate: number, eta: number | null) =>
    describe({
      ...primary,
      secondaries: [
        {
          ...link('dr1', 'streaming'),
          mode: 'resync',
          resyncBytesLeft: 3 << 20,
          resyncBytesCopied: 1 << 20,
          resyncBytesPerSecond: rate,
          resyncEtaSeconds: eta,
        },
      ],
    })
      .trimEnd()
      .split('\n')[2];
  assert.equal(
    resyncing(512 * 1024, 6),
    '    resync [#####...............] 25% copied 1.0 MiB, left 3.0 MiB, 512.0 KiB/s, ETA 6 s',
  );
  assert.equal(
    resyncing(0, null),
    '    resync [#####...............] 25% copied 1.0 MiB, left 3.0 MiB, ETA ?',
  );
  assert.match(resyncing(1024, 3 * 3600 + 20 * 60) ?? '', /, 1\.0 KiB\/s, ETA 3 h 20 min$/);
  assert.match(resyncing(1024, 125.2) ?? '', /, ETA 2 min 6 s$/);
});
