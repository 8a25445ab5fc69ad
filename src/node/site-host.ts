/**
 * One site in one process, in whichever role its data directory holds, and the role changes the
 * admin verbs and the site's primary ask for (docs/failover.md). The configured `role` says how a
 * brand-new data directory starts; after that site.json decides: a promoted site runs as a primary
 * even from a config of the secondary role, a demoted one as a secondary. A role change stops the
 * node, converts the data directory (storage/role-change.ts) and starts the other role's node on
 * it in this same process, with the same listeners (promotion.ts, switchover.ts).
 */
import { nodeEnvironment, type SiteEnvironment } from '../io/environment.ts';
import { configInRole, type FileConfig, type LoadedConfig } from '../ops/config.ts';
import type { Logger } from '../ops/logger.ts';
import type { AdminAnswer } from '../ops/status-server.ts';
import { finishRoleChange, readRoleChangeFile } from '../storage/role-change.ts';
import { readSiteFile, type SiteFile } from '../storage/site-file.ts';
import { PrimaryNode } from './primary-node.ts';
import { promoteOnRequest, promoteSecondary, switchoverRefusal } from './promotion.ts';
import { rejoin } from './rejoin.ts';
import { SecondaryNode } from './secondary-node.ts';
import type { StopOptions } from './site/site-runtime.ts';
import { switchOver } from './switchover.ts';

export type SiteNode = PrimaryNode | SecondaryNode;

/** What a role change needs of the host: the site's config file, its world, and a way to start a node. */
export interface RoleChangeHost {
  readonly loaded: LoadedConfig;
  readonly logger: Logger;
  readonly onFatal: (error: Error) => void;
  readonly environment: SiteEnvironment;
  /** The configuration the running node was started with. */
  readonly config: FileConfig;
  /** The site's config file validated whole as `role` (a ConfigError says why it cannot be). */
  configInRole(role: 'primary' | 'secondary', volumes: { name: string; size: number }[]): FileConfig;
  /** Starts a node of the config's role with the host's admin verbs; it becomes the host's node. */
  startNode(config: FileConfig): Promise<SiteNode>;
}

/**
 * Shapes each validated config before a node runs on it. Production passes none; the simulator
 * passes one that sets journal sizes below what a user may configure, so that segments roll over
 * every few cycles in either role.
 */
export type ConfigShaper = (config: FileConfig) => FileConfig;

export class SiteHost implements RoleChangeHost {
  node: SiteNode | null = null;
  config: FileConfig;
  /** The role change under way, or null: a stop waits for it, a second one is refused. */
  private change: Promise<void> | null = null;

  private constructor(
    readonly loaded: LoadedConfig,
    readonly logger: Logger,
    readonly onFatal: (error: Error) => void,
    readonly environment: SiteEnvironment,
    config: FileConfig,
    private readonly shape: ConfigShaper,
  ) {
    this.config = config;
  }

  configInRole(role: 'primary' | 'secondary', volumes: { name: string; size: number }[]): FileConfig {
    return this.shape(configInRole(this.loaded, role, volumes));
  }

  /** A role change is under way: the node is stopping, or is the other role's starting. */
  get changingRole(): boolean {
    return this.change !== null;
  }

  /**
   * Starts the site in the role its data directory holds; a role change cut short by a crash is
   * finished first. Throws what a node's start throws (ConfigError, StorageError, ...).
   */
  static async start(
    loaded: LoadedConfig,
    logger: Logger,
    onFatal: (error: Error) => void,
    environment: SiteEnvironment = nodeEnvironment,
    shape: ConfigShaper = (config) => config,
  ): Promise<SiteHost> {
    const config = shape(await configOfSite(loaded, logger, environment));
    const host = new SiteHost(loaded, logger, onFatal, environment, config, shape);
    await host.startNode(config);
    return host;
  }

  async startNode(config: FileConfig): Promise<SiteNode> {
    const options = {
      admin: (verb: string, params: URLSearchParams) => this.runAdmin(verb, params),
      onPromotionRequested: (cycle: number, generation: string) => this.promotionRequested(cycle, generation),
      environment: this.environment,
    };
    this.node =
      config.role === 'primary'
        ? await PrimaryNode.start(config, this.logger, this.onFatal, options)
        : await SecondaryNode.start(config, this.logger, this.onFatal, options);
    this.config = config;
    return this.node;
  }

  reloadTls(): void {
    this.node?.reloadTls();
  }

  /** Stops the site, after a role change under way (which may fail: the stop goes on regardless). */
  async stop(options: StopOptions): Promise<void> {
    await this.change?.catch(() => {});
    await this.node?.stop(options);
  }

  /** An admin verb (POST /admin/<verb> on the status listener): accepted, or refused saying why. */
  async runAdmin(verb: string, params: URLSearchParams): Promise<AdminAnswer> {
    const node = this.node;
    if (!node) return { status: 503, body: { error: 'the site is starting' } };
    if (this.change) return { status: 409, body: { error: 'a role change is under way' } };
    if (verb === 'promote') {
      if (!(node instanceof SecondaryNode))
        return { status: 409, body: { error: 'this site is a primary already' } };
      const started = promoteSecondary(this, node, params.get('force') === 'true');
      if (started.work) this.changeRole('promotion', started.work);
      return started.answer;
    }
    if (verb === 'switchover') {
      if (!(node instanceof PrimaryNode))
        return { status: 409, body: { error: 'this site is a secondary: ask its primary' } };
      const started = switchOver(this, node, params.get('secondary'), params.get('timeout-seconds'));
      if (started.work) this.changeRole('switchover', started.work);
      return started.answer;
    }
    if (verb === 'rejoin') {
      if (!(node instanceof PrimaryNode))
        return { status: 409, body: { error: 'this site is a secondary already' } };
      // The save of what it discards runs before the answer: no other verb meanwhile.
      this.change = Promise.resolve();
      const started = await rejoin(this, node, {
        discardMyData: params.get('discard-my-data') === 'true',
        saveDiscardedTo: params.get('save-discarded'),
      }).finally(() => {
        this.change = null;
      });
      if (started.work) this.changeRole('rejoin', started.work);
      return started.answer;
    }
    return { status: 404, body: { error: `no admin verb "${verb}" (known: promote, switchover, rejoin)` } };
  }

  /** The primary asks for a switchover: started, or why not (the primary hears it and leads on). */
  private promotionRequested(cycle: number, generation: string): string | null {
    const node = this.node;
    if (this.change || !(node instanceof SecondaryNode)) return 'a role change is under way here';
    const refusal = switchoverRefusal(this, node);
    if (refusal) return refusal;
    this.changeRole('promotion', (current) => promoteOnRequest(this, current, cycle, generation));
    return null;
  }

  /**
   * Runs a role change, one at a time; it fails the site (exit 3) if it fails, since the data
   * directory is then between roles and the next start finishes it from role-change.json.
   */
  private changeRole(what: string, work: (node: SiteNode) => Promise<void>): void {
    const node = this.node;
    if (this.change || !node) {
      this.logger.error(`${what}-refused`, { reason: 'a role change is under way, or the site is starting' });
      return;
    }
    this.change = work(node).then(
      () => {
        this.change = null;
      },
      (error: unknown) => {
        this.logger.error(`${what}-failed`, { reason: (error as Error).message });
        this.onFatal(error as Error);
      },
    );
  }
}

/**
 * The configuration the site runs with: its file's, or, when site.json records a role change,
 * the file validated as the role the site now has. A role change cut short is finished first.
 */
async function configOfSite(
  loaded: LoadedConfig,
  logger: Logger,
  environment: SiteEnvironment,
): Promise<FileConfig> {
  const { config } = loaded;
  const pending = readRoleChangeFile(environment.fs, config.dataDir);
  if (pending) {
    logger.warn('role-change-finishing', {
      to: pending.to,
      reason: 'a role change was cut short (role-change.json present): finishing it before the start',
    });
    await finishRoleChange(environment.fs, config.dataDir, pending);
  }
  const site = readSiteFile(environment.fs, config.dataDir);
  // Of the other role without a recorded change: a config pointed at the wrong directory, which the
  // node's start refuses naming both roles.
  if (!site || site.role === config.role || !roleChangeRecorded(site)) return config;
  const volumes = (site.volumes ?? []).map((volume) => ({ name: volume.name, size: volume.sizeBytes }));
  logger.info('role-from-site-state', {
    configured: config.role,
    role: site.role,
    reason: `this site's role changed (site.json ${site.role === 'primary' ? 'promotedFrom' : 'demotedFrom'}); the data directory decides its role`,
  });
  return configInRole(loaded, site.role, volumes);
}

function roleChangeRecorded(site: SiteFile): boolean {
  return site.role === 'primary' ? site.promotedFrom !== undefined : site.demotedFrom !== undefined;
}
