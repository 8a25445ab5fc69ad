/**
 * One site in one process, in whichever role its data directory holds, and the role changes the
 * admin verbs ask for (docs/failover.md). The configured `role` says how a brand-new data directory
 * starts; after that site.json decides: a promoted site runs as a primary even from a config of
 * the secondary role. `cyclerep promote` turns the running secondary into a primary in this same
 * process: the secondary stops, its stored cycles are applied, the data directory is converted
 * (storage/promotion.ts) and the primary starts on it with the same listeners.
 */
import { ConfigError } from '../core/errors.ts';
import type { Generation } from '../core/identity.ts';
import { nodeEnvironment, type SiteEnvironment } from '../io/environment.ts';
import { configInRole, type FileConfig, type LoadedConfig, type PrimaryFileConfig } from '../ops/config.ts';
import type { Logger } from '../ops/logger.ts';
import type { AdminAnswer } from '../ops/status-server.ts';
import { changeRole, finishRoleChange, planPromotion, readRoleChangeFile } from '../storage/role-change.ts';
import { readSiteFile, type SiteFile } from '../storage/site-file.ts';
import { PrimaryNode } from './primary-node.ts';
import { type PromotionFacts, SecondaryNode } from './secondary-node.ts';
import type { StopOptions } from './site/site-runtime.ts';
import { randomId } from './site-identity.ts';

export type SiteNode = PrimaryNode | SecondaryNode;

export class SiteHost {
  /** The role change under way, or null: a stop waits for it, a second one is refused. */
  private change: Promise<void> | null = null;

  private constructor(
    public node: SiteNode,
    private readonly loaded: LoadedConfig,
    private readonly logger: Logger,
    private readonly onFatal: (error: Error) => void,
    private readonly environment: SiteEnvironment,
  ) {}

  /**
   * Starts the site in the role its data directory holds; a promotion cut short by a crash is
   * finished first. Throws what a node's start throws (ConfigError, StorageError, ...).
   */
  static async start(
    loaded: LoadedConfig,
    logger: Logger,
    onFatal: (error: Error) => void,
    environment: SiteEnvironment = nodeEnvironment,
  ): Promise<SiteHost> {
    const config = await configOfSite(loaded, logger, environment);
    let host: SiteHost | null = null;
    const admin = (verb: string, params: URLSearchParams): Promise<AdminAnswer> =>
      host ? host.admin(verb, params) : Promise.resolve({ status: 503, body: { error: 'starting' } });
    const options = { admin, environment };
    const node =
      config.role === 'primary'
        ? await PrimaryNode.start(config, logger, onFatal, options)
        : await SecondaryNode.start(config, logger, onFatal, options);
    host = new SiteHost(node, loaded, logger, onFatal, environment);
    return host;
  }

  reloadTls(): void {
    this.node.reloadTls();
  }

  /** Stops the site, after a role change under way (which may fail: the stop goes on regardless). */
  async stop(options: StopOptions): Promise<void> {
    await this.change?.catch(() => {});
    await this.node.stop(options);
  }

  private async admin(verb: string, params: URLSearchParams): Promise<AdminAnswer> {
    if (verb === 'promote') return this.promote(params.get('force') === 'true');
    return { status: 404, body: { error: `no admin verb "${verb}" (known: promote)` } };
  }

  /**
   * Checks that a promotion may go ahead and, if so, starts it and answers at once (the status
   * listener restarts with the primary; `cyclerep promote` waits for the new generation there).
   */
  private async promote(force: boolean): Promise<AdminAnswer> {
    const node = this.node;
    if (!(node instanceof SecondaryNode))
      return { status: 409, body: { error: 'this site is a primary already' } };
    if (this.change) return { status: 409, body: { error: 'a role change is under way' } };
    const facts = node.promotionFacts();
    const refusal = promotionRefusal(facts, node.promotionBasis().volumes !== null, force);
    if (refusal) return { status: 409, body: { error: refusal, facts } };
    let config: PrimaryFileConfig;
    try {
      config = this.primaryConfig(node);
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      return { status: 409, body: { error: error.message, facts } };
    }
    const generation = randomId(this.environment.randomBytes);
    this.logger.warn('promotion-started', {
      generation,
      force,
      primaryConnected: facts.primaryConnected,
      lastContact: facts.lastContact ?? 'never',
      applicableThrough: facts.applicableThrough,
      newestCycleSeen: facts.newestCycleSeen,
    });
    this.change = this.carryOutPromotion(node, config, generation).then(
      () => {
        this.change = null;
      },
      (error: unknown) => {
        this.logger.error('promotion-failed', { reason: (error as Error).message });
        this.onFatal(error as Error);
      },
    );
    return { status: 202, body: { promoting: true, generation, facts } };
  }

  private primaryConfig(node: SecondaryNode): PrimaryFileConfig {
    const volumes = node.status().volumes.map((volume) => ({ name: volume.name, size: volume.sizeBytes }));
    return configInRole(this.loaded, 'primary', volumes) as PrimaryFileConfig;
  }

  /**
   * The secondary stops (its NBD readers and its primary's sessions end), its stored cycles are
   * applied by an offline start like `cyclerep recover`, the data directory is converted, and the
   * primary starts on it with the same listeners and admin verbs.
   */
  private async carryOutPromotion(
    secondary: SecondaryNode,
    config: PrimaryFileConfig,
    generationId: string,
  ): Promise<void> {
    const { timeoutMs } = this.loaded.config.shutdown;
    await secondary.stop({ nbdDrainMs: timeoutMs / 2, statusLingerMs: 0 });
    const secondaryConfig = this.loaded.config;
    if (secondaryConfig.role !== 'secondary') throw new Error('promotion of a site configured as a primary');
    const offline = await SecondaryNode.start(secondaryConfig, this.logger, this.onFatal, {
      offline: true,
      environment: this.environment,
    });
    await offline.settle();
    const { applied } = offline.status();
    const basis = offline.promotionBasis();
    await offline.stop();
    const history = basis.binding?.history as Generation[];
    const plan = planPromotion({
      site: basis.site,
      applied,
      history,
      newGenerationId: generationId,
      volumes: basis.volumes ?? [],
      config,
    });
    await changeRole(this.environment.fs, config.dataDir, plan);
    this.logger.warn('promoted', {
      generation: generationId,
      startedAt: applied + 1,
      superseded: history.at(-1)?.id ?? '',
      applied,
    });
    this.node = await PrimaryNode.start(config, this.logger, this.onFatal, {
      admin: (verb, params) => this.admin(verb, params),
      environment: this.environment,
    });
  }
}

/** Why a secondary may not be promoted now, or null. */
export function promotionRefusal(facts: PromotionFacts, hasVolumes: boolean, force: boolean): string | null {
  if (!hasVolumes || !facts.primary)
    return 'this site never replicated from a primary: there is nothing to promote';
  if (!facts.primary.history)
    return "the primary's generation chain is not recorded yet (a site.json older than promotion): let the primary connect once, or recreate the site";
  if (!facts.imageConsistent)
    return 'the image is not consistent (an in-place resync is under way): promoting it would expose a mix of two moments; refused even with --force';
  if (facts.primaryConnected && !force)
    return `the primary is connected (last contact ${facts.lastContact}): promoting now leaves it writing to a site nobody replicates; stop it first, or use --force (it is then fenced when it dials this site)`;
  return null;
}

/**
 * The configuration the site runs with: its file's, or, when site.json records a role change,
 * the file validated as the role the site now has. A promotion cut short is finished first.
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
