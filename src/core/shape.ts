/**
 * Shape rules and handshake checks. The rules for names, block size and volume sizes are the ones
 * the config schema applies (src/ops/config.ts uses them), so that what arrives in a hello is held
 * to exactly what a config file would be: a name is never a path, a size is whole blocks.
 */
import { HandshakeError } from './errors.ts';
import { limits } from './limits.ts';
import type { GroupShape } from './types.ts';

/** Group, site and volume names: they become file names, so no "/", no leading "." or "-". */
export const namePattern = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
export const namePatternText = 'letters, digits, ".", "_" and "-", starting with a letter or digit';

/** What is wrong with a name, or null. */
export function nameProblem(name: string): string | null {
  const bytes = new TextEncoder().encode(name).length;
  if (bytes < 1 || bytes > limits.nameBytesMax) return `${bytes} bytes, expected 1..${limits.nameBytesMax}`;
  if (!namePattern.test(name)) return `${JSON.stringify(name)}: ${namePatternText}`;
  return null;
}

/** What is wrong with a block size, or null. */
export function blockBytesProblem(blockBytes: number): string | null {
  if (
    !Number.isSafeInteger(blockBytes) ||
    !Number.isInteger(Math.log2(blockBytes)) ||
    blockBytes < limits.blockBytesMin ||
    blockBytes > limits.blockBytesMax
  ) {
    return `${blockBytes} is not a power of two between ${limits.blockBytesMin} and ${limits.blockBytesMax}`;
  }
  return null;
}

/** What is wrong with a volume size, or null. */
export function volumeSizeProblem(sizeBytes: number, blockBytes: number): string | null {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % blockBytes !== 0)
    return `${sizeBytes} is not a positive multiple of blockSize ${blockBytes}`;
  return null;
}

/** Throws HandshakeError `hello-invalid` naming the first rule an offered shape breaks. */
export function checkShapeRules(offered: GroupShape): void {
  const problems: string[] = [];
  const group = nameProblem(offered.group);
  if (group) problems.push(`group: ${group}`);
  const block = blockBytesProblem(offered.blockBytes);
  if (block) problems.push(`block size: ${block}`);
  if (offered.volumes.length < 1 || offered.volumes.length > limits.volumesMax)
    problems.push(`${offered.volumes.length} volumes, expected 1..${limits.volumesMax}`);
  offered.volumes.forEach((volume, index) => {
    const name = nameProblem(volume.name);
    if (name) problems.push(`volume ${index} name: ${name}`);
    const size = block ? null : volumeSizeProblem(volume.sizeBytes, offered.blockBytes);
    if (size) problems.push(`volume ${index} size: ${size}`);
  });
  const names = offered.volumes.map((volume) => volume.name);
  if (new Set(names).size !== names.length) problems.push('two volumes share a name');
  if (problems.length > 0) throw new HandshakeError('hello-invalid', `hello: ${problems.join('; ')}`);
}

/** Throws HandshakeError naming the first difference between what the primary offers and what we hold. */
export function checkSameShape(offered: GroupShape, held: GroupShape): void {
  if (offered.group !== held.group) {
    throw new HandshakeError(
      'group-mismatch',
      `group "${offered.group}" offered, this site is of group "${held.group}"`,
    );
  }
  if (offered.blockBytes !== held.blockBytes) {
    throw new HandshakeError(
      'block-size-mismatch',
      `block size ${offered.blockBytes} offered, this site uses ${held.blockBytes}`,
    );
  }
  if (offered.volumes.length !== held.volumes.length) {
    throw new HandshakeError(
      'volumes-mismatch',
      `${offered.volumes.length} volumes offered, this site holds ${held.volumes.length}`,
    );
  }
  offered.volumes.forEach((volume, index) => {
    const ours = held.volumes[index];
    if (!ours || ours.name !== volume.name) {
      throw new HandshakeError(
        'volumes-mismatch',
        `volume ${index} is "${volume.name}" at the primary, "${ours?.name}" here`,
      );
    }
    if (ours.sizeBytes !== volume.sizeBytes) {
      throw new HandshakeError(
        'volumes-mismatch',
        `volume "${volume.name}" is ${volume.sizeBytes} bytes at the primary, ${ours.sizeBytes} here`,
      );
    }
  });
}
