/**
 * How the command line reaches a site's status listener: plain HTTP, or HTTPS (config `http.tls`)
 * with the CA that signed the site's certificate and, for admin verbs from another machine, a
 * client certificate the site's `http.tls.admins` names (docs/operations.md, "Admin over TLS").
 */
import { readFileSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import type { PeerCertificate } from 'node:tls';
import { identitiesOf } from '../net/tls.ts';

/** Files for HTTPS (paths), each optional; `peer` names the site's certificate identity to expect. */
export interface ClientTls {
  ca: string | null;
  cert: string | null;
  key: string | null;
  peer: string | null;
}

export const plainClient: ClientTls = { ca: null, cert: null, key: null, peer: null };

/** The parseArgs options every command that talks to a site takes. */
export const clientTlsArgs = {
  ca: { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  peer: { type: 'string' },
} as const;

/** The options from parseArgs' values; throws when only one of --cert and --key is given. */
export function clientTlsOf(values: { ca?: string; cert?: string; key?: string; peer?: string }): ClientTls {
  if ((values.cert === undefined) !== (values.key === undefined))
    throw new Error('--cert and --key go together (the client certificate and its key)');
  return {
    ca: values.ca ?? null,
    cert: values.cert ?? null,
    key: values.key ?? null,
    peer: values.peer ?? null,
  };
}

/** One request; the body parsed as JSON (null when it is not JSON). Rejects when the site cannot be reached. */
export function siteRequest(
  method: 'GET' | 'POST',
  url: string,
  tls: ClientTls,
  timeoutMs: number,
): Promise<{ status: number; body: unknown }> {
  const target = new URL(url);
  const https = target.protocol === 'https:';
  if (!https && target.protocol !== 'http:') return Promise.reject(new Error(`${url}: not http or https`));
  // No agent: a pooled connection would skip the certificate checks of a request with other options.
  const options: RequestOptions = {
    method,
    agent: false,
    signal: AbortSignal.timeout(timeoutMs),
    ...(https ? tlsOptions(tls) : {}),
  };
  return new Promise((resolve, reject) => {
    const made = (https ? httpsRequest : httpRequest)(target, options, (response) => {
      readBody(response).then(
        (text) => resolve({ status: response.statusCode ?? 0, body: parseJson(text) }),
        reject,
      );
    });
    made.once('error', reject);
    made.end();
  });
}

function tlsOptions(tls: ClientTls): RequestOptions {
  const peer = tls.peer;
  return {
    ...(tls.ca ? { ca: readFileSync(tls.ca) } : {}),
    ...(tls.cert ? { cert: readFileSync(tls.cert) } : {}),
    ...(tls.key ? { key: readFileSync(tls.key) } : {}),
    // Site certificates name the site (cyclerep certs), not the host it runs on: with --peer, that
    // name is what must answer; the chain is verified against the CA either way.
    ...(peer
      ? {
          checkServerIdentity: (_host: string, certificate: PeerCertificate) =>
            identitiesOf(certificate).includes(peer)
              ? undefined
              : new Error(
                  `the site's certificate names ${identitiesOf(certificate).join(', ')}, not ${peer}`,
                ),
        }
      : {}),
  };
}

async function readBody(response: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of response) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}
