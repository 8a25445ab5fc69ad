/** `cyclerep status [--json] [--url URL]`: the status of a running site, from its HTTP endpoint. */

interface LinkStatus {
  name: string;
  link: string;
  stored: number;
  applied: number;
  lagCycles: number;
  lagBytes: number;
  lagSeconds: number;
  lastFailure?: string | null;
}

interface SiteStatus {
  group: string;
  role: 'primary' | 'secondary';
  name?: string;
  capture?: number;
  closed?: number;
  journalBytes?: number;
  journalFull?: boolean;
  link?: string;
  stored?: number;
  applied?: number;
  secondaries?: LinkStatus[];
  fault?: { kind: string; message: string; at: string } | null;
}

export async function runStatus(url: string, json: boolean): Promise<number> {
  const target = `${url.replace(/\/$/, '')}/status`;
  let body: SiteStatus;
  try {
    const response = await fetch(target, { signal: AbortSignal.timeout(5000) });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    body = (await response.json()) as SiteStatus;
  } catch (error) {
    process.stderr.write(`cyclerep status: cannot read ${target}: ${(error as Error).message}\n`);
    return 1;
  }
  process.stdout.write(json ? `${JSON.stringify(body, null, 2)}\n` : describe(body));
  return 0;
}

export function describe(status: SiteStatus): string {
  const fault = status.fault
    ? `  FAULT ${status.fault.kind} at ${status.fault.at}: ${status.fault.message}\n` +
      '  the site is stopping (exit code 3); nothing acknowledged is lost: free space or fix the disk, then restart it\n'
    : '';
  if (status.role === 'secondary') {
    return `${status.group}/${status.name}: secondary, link ${status.link}, stored ${status.stored}, applied ${status.applied}\n${fault}`;
  }
  const lines = [
    `${status.group}: primary, capture ${status.capture}, closed ${status.closed}, journal ${status.journalBytes} bytes${status.journalFull ? ' (FULL: writes wait)' : ''}`,
  ];
  for (const link of status.secondaries ?? []) {
    lines.push(
      `  ${link.name}: ${link.link}, stored ${link.stored}, applied ${link.applied}, lag ${link.lagCycles} cycles / ${link.lagBytes} bytes / ${link.lagSeconds.toFixed(1)} s` +
        (link.link !== 'streaming' && link.lastFailure ? ` (last failure: ${link.lastFailure})` : ''),
    );
  }
  return `${lines.join('\n')}\n${fault}`;
}
