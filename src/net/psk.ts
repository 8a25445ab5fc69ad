/**
 * The pre-shared-key mode for small setups: TLS 1.3 with an external PSK instead of certificates.
 * Both sites hold the same key file (32 to 64 random bytes, hex, mode 0600); the primary names
 * itself with an identity that the secondary must allow. Proving knowledge of the key is mutual
 * (the handshake's binder and Finished messages), and the traffic is encrypted as with
 * certificates. Make a key with `openssl rand -hex 32 > link.psk && chmod 600 link.psk`.
 */
import { readFileSync } from 'node:fs';
import type { ConnectionOptions, TlsOptions } from 'node:tls';
import { assertPrivateKeyFile } from './key-file.ts';

export interface PskConfig {
  keyFile: string;
  /** The name the primary presents. */
  identity?: string | undefined;
  /** The identities a secondary accepts. */
  peers?: string[] | undefined;
}

export interface PskMaterial {
  key: Buffer;
  identity: string;
  peers: readonly string[];
}

export const pskBytesMin = 32;
export const pskBytesMax = 64;
const ciphers = 'TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256';

/** Reads and checks the key file: private to its owner, hex, 32 to 64 bytes. */
export function loadPsk(config: PskConfig): PskMaterial {
  assertPrivateKeyFile(config.keyFile);
  const text = readFileSync(config.keyFile, 'utf8').trim();
  if (!/^([0-9a-fA-F]{2})+$/.test(text)) throw new Error(`${config.keyFile}: expected the key as hex digits`);
  const key = Buffer.from(text, 'hex');
  if (key.length < pskBytesMin || key.length > pskBytesMax)
    throw new Error(
      `${config.keyFile}: a key of ${key.length} bytes; ${pskBytesMin} to ${pskBytesMax} are accepted`,
    );
  return { key, identity: config.identity ?? '', peers: [...(config.peers ?? [])] };
}

/** The primary's side: present the identity, prove the key. */
export function pskClientOptions(material: PskMaterial): ConnectionOptions {
  return {
    minVersion: 'TLSv1.3',
    ciphers,
    // No certificate is involved: the key proves who is at the other end.
    checkServerIdentity: () => undefined,
    pskCallback: () => ({ psk: material.key, identity: material.identity }),
  };
}

/** The secondary's side: the key for an allowed identity, nothing (a failed handshake) otherwise. */
export function pskServerOptions(
  material: () => PskMaterial,
  onRefused: (identity: string) => void,
): TlsOptions {
  return {
    minVersion: 'TLSv1.3',
    ciphers,
    pskCallback: (_socket, identity) => {
      const current = material();
      if (current.peers.includes(identity)) return current.key;
      onRefused(identity);
      return null;
    },
  };
}

/** OpenSSL's words for a failed PSK handshake, in the operator's. */
export function explainPskFailure(message: string): string {
  if (message.includes('binder does not verify')) return 'wrong pre-shared key (the key files differ)';
  return message;
}
