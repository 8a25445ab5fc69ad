/**
 * TLS 1.3 with mutual authentication for site links. Both ends present a certificate that must
 * chain to the configured CA, and each checks that the other's identity (a DNS name in its
 * subjectAltName, or its CN) is one of the configured peers. A refused peer gets nothing read:
 * frames flow only after both checks passed.
 */
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import {
  type ConnectionOptions,
  createSecureContext,
  type PeerCertificate,
  type SecureContextOptions,
  type TLSSocket,
  type TlsOptions,
} from 'node:tls';
import { assertPrivateKeyFile } from './key-file.ts';

export interface TlsConfig {
  cert: string;
  key: string;
  ca: string;
  peers: string[];
}

/** Certificate, key and CA read from their files; read again on reload (SIGHUP). */
export interface TlsMaterial {
  context: SecureContextOptions;
  peers: readonly string[];
}

/**
 * Reads the files and checks that they make a usable context (PEM that parses, a key that matches
 * the certificate, a key file private to its owner), so that a half-copied renewal is refused here
 * rather than at the next connect.
 */
export function loadTlsMaterial(config: TlsConfig): TlsMaterial {
  assertPrivateKeyFile(config.key);
  const context: SecureContextOptions = {
    cert: readFileSync(config.cert),
    key: readFileSync(config.key),
    ca: readFileSync(config.ca),
    minVersion: 'TLSv1.3',
  };
  try {
    createSecureContext(context);
  } catch (error) {
    throw new Error(`${config.cert} with ${config.key}: ${(error as Error).message}`);
  }
  return { context, peers: [...config.peers] };
}

/** The names a certificate stands for: its DNS subjectAltNames, else its CN. */
export function identitiesOf(certificate: PeerCertificate | undefined): string[] {
  if (!certificate || Object.keys(certificate).length === 0) return [];
  const names = (certificate.subjectaltname ?? '')
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry.startsWith('DNS:'))
    .map((entry) => entry.slice(4));
  if (names.length > 0) return names;
  const commonName = certificate.subject?.CN;
  return typeof commonName === 'string' ? [commonName] : [];
}

/** Null when the certificate names an allowed peer, else why not. */
export function refusalOf(certificate: PeerCertificate | undefined, peers: readonly string[]): string | null {
  const names = identitiesOf(certificate);
  if (names.length === 0) return 'the peer presented no certificate identity';
  if (names.some((name) => peers.includes(name))) return null;
  return `identity ${names.join(', ')} is not among the allowed peers (${peers.join(', ')})`;
}

/** Options for the primary's side: its certificate, the CA, and the secondary's identity check. */
export function clientOptions(material: TlsMaterial): ConnectionOptions {
  return {
    ...material.context,
    rejectUnauthorized: true,
    // The chain was verified against the CA; which names may answer is the configured peers' say,
    // not the address dialled.
    checkServerIdentity: (_host, certificate) => {
      const refusal = refusalOf(certificate, material.peers);
      return refusal ? new Error(`secondary refused: ${refusal}`) : undefined;
    },
  };
}

/**
 * Options for the secondary's listener: its certificate, and a client certificate requested. The
 * chain is judged in `refusalOfClient` rather than by Node's rejectUnauthorized, which in TLS 1.3
 * drops the connection with no more than "socket hang up" on either side: checked here, the refusal
 * names the reason (expired, unknown CA) and the peer still gets nothing read.
 */
export function serverOptions(material: TlsMaterial): TlsOptions {
  return { ...material.context, requestCert: true, rejectUnauthorized: false };
}

/** The secondary's check once the handshake succeeded: null, or why the primary is refused. */
export function refusalOfClient(socket: TLSSocket, peers: readonly string[]): string | null {
  if (!socket.authorized) {
    const names = identitiesOf(socket.getPeerCertificate());
    const who = names.length > 0 ? `certificate of ${names.join(', ')}` : 'no certificate';
    return `${who} not trusted: ${String(socket.authorizationError ?? 'no certificate presented')}`;
  }
  return refusalOf(socket.getPeerCertificate(), peers);
}

/** How often the certificate files are looked at for a change (stat polling survives renames). */
export const tlsWatchIntervalMs = 2000;

/**
 * Calls `onChange` when one of the files (certificate, key, CA, or a pre-shared key) changes, so a
 * renewal needs no signal; returns the function that stops watching. Never keeps the process alive.
 */
export function watchTlsFiles(paths: string[], onChange: () => void): () => void {
  const listener = (current: { mtimeMs: number }, previous: { mtimeMs: number }): void => {
    if (current.mtimeMs !== previous.mtimeMs) onChange();
  };
  for (const path of paths) watchFile(path, { persistent: false, interval: tlsWatchIntervalMs }, listener);
  return () => {
    for (const path of paths) unwatchFile(path, listener);
  };
}
