/** Handshake checks: both sites must describe the same group, or the link is refused. */
import { HandshakeError } from './errors.ts';
import type { GroupShape } from './types.ts';

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
