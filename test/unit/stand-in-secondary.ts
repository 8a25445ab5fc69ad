// A stand-in secondary over TCP on 127.0.0.1 for tests of one PrimaryNode (switchover-restart,
// write-pacing): enough of the protocol to welcome a primary and answer its cycles.
import { createServer, type Server, type Socket } from 'node:net';
import { type PrimaryFileConfig, validateConfig } from '../../src/ops/config.ts';
import {
  encodeFrame,
  type Frame,
  FrameDecoder,
  protocolVersion,
  type SwitchoverFrame,
} from '../../src/protocol/frames.ts';

/**
 * A secondary reduced to a few frames: it welcomes, stores every cycle (unless `storing` is
 * false: then it keeps the link up with heartbeats and stores nothing, like a site whose disk
 * cannot keep up), and keeps the switchover frames it gets.
 */
export class StandInSecondary {
  stored = 0;
  storing = true;
  readonly switchovers: SwitchoverFrame[] = [];
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  private lastSwitchoverSocket: Socket | null = null;

  async listen(): Promise<number> {
    const server = createServer((socket) => this.onConnection(socket));
    this.server = server;
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return (server.address() as { port: number }).port;
  }

  /** Answers the last switchover as a site whose config cannot run a primary. */
  refuseLast(): void {
    this.lastSwitchoverSocket?.write(
      encodeFrame({ type: 'error', code: 'switchover-refused', message: 'no primary sections here' }),
    );
  }

  close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    return new Promise((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private onConnection(socket: Socket): void {
    this.sockets.add(socket);
    const decoder = new FrameDecoder();
    const heartbeat = setInterval(() => send({ type: 'heartbeat', nonce: 1 }), 100);
    const send = (frame: Frame): void => {
      if (!socket.destroyed) socket.write(encodeFrame(frame));
    };
    socket.on('error', () => {});
    socket.on('close', () => {
      clearInterval(heartbeat);
      this.sockets.delete(socket);
    });
    socket.on('data', (chunk) => {
      for (const frame of decoder.push(chunk).frames) {
        if (frame.type === 'hello')
          send({
            type: 'welcome',
            protocolVersion,
            sessionId: frame.sessionId,
            secondary: 'dr1',
            stored: this.stored,
            applied: this.stored,
            consistentStored: this.stored,
          });
        else if (frame.type === 'end-of-cycle' && this.storing) {
          this.stored = frame.cycle;
          send({ type: 'stored', stored: this.stored, applied: this.stored });
        } else if (frame.type === 'switchover') {
          this.switchovers.push(frame);
          this.lastSwitchoverSocket = socket;
        }
      }
    });
  }
}

/**
 * A primary's config for a PrimaryNode started in-process against a stand-in on `port`: fast
 * cycles and link timings, no tracking, no NBD or HTTP listener; `sections` adds or replaces keys.
 */
export function standInPrimaryConfig(
  group: string,
  dataDir: string,
  port: number,
  sections: Record<string, unknown> = {},
): PrimaryFileConfig {
  return {
    ...(validateConfig({
      group,
      role: 'primary',
      dataDir,
      volumes: [{ name: 'data', size: 1024 * 1024 }],
      cycle: { intervalMinMs: 20, queuedMax: 64 },
      tracking: { enabled: false },
      link: { heartbeatMs: 100, timeoutMs: 2000, reconnectMinMs: 50, reconnectMaxMs: 200 },
      secondaries: [{ name: 'dr1', address: `127.0.0.1:${port}` }],
      ...sections,
    }) as PrimaryFileConfig),
    nbd: null,
    http: null,
  } as unknown as PrimaryFileConfig;
}
