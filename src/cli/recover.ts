/**
 * `cyclerep recover --data-dir D`, offline: on a secondary, finish every stored but unapplied cycle
 * and drop incomplete ones; on a primary, write every journaled write back to the volumes. Then
 * the image files are whole and any tool can read them.
 */
import { nodeFileSystem } from '../io/node-file-system.ts';
import { PrimaryNode } from '../node/primary-node.ts';
import { SecondaryNode } from '../node/secondary-node.ts';
import { createLogger } from '../ops/logger.ts';
import { finishRoleChange, readRoleChangeFile } from '../storage/role-change.ts';
import { readSiteFile, type SiteFile, siteFilePath } from '../storage/site-file.ts';
import { exitCodes, startFailureCode } from './exit-codes.ts';

export async function runRecover(dataDir: string | undefined): Promise<number> {
  if (!dataDir) {
    process.stderr.write('cyclerep recover: --data-dir D is required\n');
    return exitCodes.usage;
  }
  let site: SiteFile | null;
  try {
    // A role change cut short (docs/failover.md) is finished first, as a site's start would.
    const pending = readRoleChangeFile(nodeFileSystem, dataDir);
    if (pending) {
      process.stderr.write(
        `cyclerep recover: finishing a role change to ${pending.to} cut short (role-change.json)\n`,
      );
      await finishRoleChange(nodeFileSystem, dataDir, pending);
    }
    site = readSiteFile(nodeFileSystem, dataDir);
  } catch (error) {
    process.stderr.write(`cyclerep recover: ${(error as Error).message}\n`);
    return startFailureCode(error);
  }
  if (!site) {
    process.stderr.write(
      `cyclerep recover: ${siteFilePath(dataDir)} not found: not a cyclerep data directory\n`,
    );
    return exitCodes.usage;
  }
  const logger = createLogger({ site: `${site.config.group}/recover`, format: 'pretty' });
  let failure: Error | null = null;
  const onFatal = (error: Error): void => {
    failure = error;
  };
  try {
    if (site.role === 'primary') {
      const node = await PrimaryNode.start(site.config, logger, onFatal, { offline: true });
      await node.stop();
    } else {
      const node = await SecondaryNode.start(site.config, logger, onFatal, { offline: true });
      await node.settle();
      const { stored, applied } = node.status();
      await node.stop();
      logger.info('recovered', { stored, applied });
    }
  } catch (error) {
    logger.error('recover-failed', { reason: (error as Error).message });
    // Damage found while opening is refused like at a site's start (exit 5), a site.json at odds
    // with its own configuration is exit 2; anything else failed at run time.
    const code = startFailureCode(error);
    return code === exitCodes.start ? exitCodes.storage : code;
  }
  return failure ? exitCodes.storage : exitCodes.ok;
}
