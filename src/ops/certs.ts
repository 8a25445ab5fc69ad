/**
 * `cyclerep certs`: a CA and one certificate per site for a test setup, made with the openssl
 * command (P-256 keys, SHA-256, subjectAltName DNS:<name>, usable as client and server). Keys are
 * written 0600. For production, use the organisation's CA; the site config only needs the files.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface SiteCertificate {
  cert: string;
  key: string;
}

function openssl(args: string[], directory: string): void {
  const result = spawnSync('openssl', args, { cwd: directory, encoding: 'utf8' });
  if (result.error) throw new Error(`openssl could not run (is it installed?): ${result.error.message}`);
  if (result.status !== 0) throw new Error(`openssl ${args[0]} failed: ${result.stderr.trim()}`);
}

const keyArgs = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];

/** Makes ca.crt and ca.key in `directory` unless they exist; returns the CA certificate's path. */
export function ensureCa(directory: string, subject = 'cyclerep CA'): string {
  mkdirSync(directory, { recursive: true });
  if (!existsSync(join(directory, 'ca.crt'))) {
    openssl(
      [
        'req',
        '-x509',
        ...keyArgs,
        '-keyout',
        'ca.key',
        '-out',
        'ca.crt',
        '-days',
        '3650',
        '-subj',
        `/CN=${subject}`,
      ],
      directory,
    );
    chmodSync(join(directory, 'ca.key'), 0o600);
  }
  return join(directory, 'ca.crt');
}

/**
 * A certificate for `name` signed by the CA in `directory`, valid for `days` (0: it expires at
 * once, which the tests use).
 */
export function makeSiteCertificate(directory: string, name: string, days = 825): SiteCertificate {
  if (!/^[A-Za-z0-9][A-Za-z0-9.-]*$/.test(name)) throw new Error(`"${name}" is not usable as a DNS name`);
  ensureCa(directory);
  const extensions = join(directory, `${name}.ext`);
  writeFileSync(
    extensions,
    `subjectAltName=DNS:${name},IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n`,
  );
  openssl(
    ['req', ...keyArgs, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`],
    directory,
  );
  openssl(
    [
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-days',
      String(days),
      '-extfile',
      `${name}.ext`,
      '-out',
      `${name}.crt`,
    ],
    directory,
  );
  chmodSync(join(directory, `${name}.key`), 0o600);
  return { cert: join(directory, `${name}.crt`), key: join(directory, `${name}.key`) };
}
