/** fio with its nbd engine (libnbd), one job, JSON output reduced to the figures the tables use. */
import { runToolAsync } from './processes.ts';

export interface FioJob {
  uri: string;
  rw: 'randwrite' | 'write' | 'randread' | 'read';
  blockSize: string;
  iodepth: number;
  seconds: number;
  /** The region written: bytes from offset. */
  sizeBytes: number;
  offsetBytes?: number;
  /** Throttle to this many IOPS. */
  rateIops?: number;
  /** fio's buffer_compress_percentage: the share of each buffer a compressor can squeeze out (default: random buffers). */
  compressPercentage?: number;
  /** fio's random_distribution, e.g. zoned:90/10:10/90 (90% of writes to 10% of blocks). */
  distribution?: string;
  /** Write this many bytes once instead of running for `seconds`. */
  once?: boolean;
  /** With `once`, stop after this many bytes (fio's io_size) instead of covering the whole region. */
  ioBytes?: number;
  /** Stops fio (SIGTERM) when aborted; runFio then rejects. */
  signal?: AbortSignal;
}

/** The large sequential writes several scenarios use: 256 KiB at depth 8. */
export const sequentialWrites = { rw: 'write', blockSize: '256k', iodepth: 8 } as const;

export interface FioResult {
  iops: number;
  mibPerSecond: number;
  p50Us: number;
  p99Us: number;
  /** The slowest write or read's completion latency: a stalled write shows here. */
  maxUs: number;
  bytes: number;
  seconds: number;
}

export async function runFio(job: FioJob): Promise<FioResult> {
  const args = [
    '--name=bench',
    '--ioengine=nbd',
    `--uri=${job.uri}`,
    `--rw=${job.rw}`,
    `--bs=${job.blockSize}`,
    `--iodepth=${job.iodepth}`,
    `--size=${job.sizeBytes}`,
    `--offset=${job.offsetBytes ?? 0}`,
    '--randrepeat=0',
    '--output-format=json',
    ...(job.once ? [] : ['--time_based', `--runtime=${job.seconds}`]),
    ...(job.ioBytes ? [`--io_size=${job.ioBytes}`] : []),
    ...(job.rateIops ? [`--rate_iops=${Math.max(1, Math.round(job.rateIops))}`] : []),
    ...(job.compressPercentage !== undefined
      ? [`--buffer_compress_percentage=${job.compressPercentage}`, '--refill_buffers']
      : []),
    ...(job.distribution ? [`--random_distribution=${job.distribution}`] : []),
  ];
  const { output } = await runToolAsync('fio', args, { signal: job.signal });
  const json = JSON.parse(output.slice(output.indexOf('{'))) as FioJson;
  const job0 = json.jobs[0];
  if (!job0) throw new Error(`fio printed no job: ${output.slice(0, 2000)}`);
  const side = job.rw.includes('read') ? job0.read : job0.write;
  const percentile = (key: string) => (side.clat_ns.percentile?.[key] ?? 0) / 1000;
  return {
    iops: side.iops,
    mibPerSecond: side.bw_bytes / 1024 / 1024,
    p50Us: percentile('50.000000'),
    p99Us: percentile('99.000000'),
    maxUs: side.clat_ns.max / 1000,
    bytes: side.io_bytes,
    seconds: side.runtime / 1000,
  };
}

interface FioSide {
  iops: number;
  bw_bytes: number;
  io_bytes: number;
  runtime: number;
  clat_ns: { max: number; percentile?: Record<string, number> };
}

interface FioJson {
  jobs: { read: FioSide; write: FioSide }[];
}
