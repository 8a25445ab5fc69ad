/**
 * TLS 1.3 with mutual authentication for site links. Both ends present a certificate that must
 * chain to the configured CA, and each checks that the other's identity (a DNS name in its
 * subjectAltName, or its CN) is one of the configured peers. A refused peer gets nothing read:
 * frames flow only after both checks passed.
 */
import { readFileSync } from 'node:fs';
import type {
  ConnectionOptions,
  PeerCertificate,
  SecureContextOptions,
  TLSSocket,
  TlsOptions,
} from 'node:tls';

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

export function loadTlsMaterial(config: TlsConfig): TlsMaterial {
  return {
    context: {
      cert: readFileSync(config.cert),
      key: readFileSync(config.key),
      ca: readFileSync(config.ca),
      minVersion: 'TLSv1.3',
    },
    peers: [...config.peers],
  };
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
