// Where a standby controller may send the CLI: a `not-active` answer names the active
// controller's URL, and following it sends the bearer token there. Only controllers the
// operator listed (--controller-allow / UNDERSTUDY_CONTROLLER_ALLOW) are followed, and never
// from https to plain http.
import { normalizeBaseUrl } from './api-client.js';
import { CliError, EXIT } from './exit.js';

/** `--controller-allow`: comma-separated controller URLs (or host:port), each normalized. */
export function parseControllerAllow(value: string | undefined): string[] {
  if (value === undefined) return [];
  return value
    .split(',')
    .map((v) => v.trim())
    .filter((v) => v !== '')
    .map((v) => {
      try {
        return normalizeBaseUrl(v);
      } catch {
        throw new CliError(
          `--controller-allow: ${v} is not a URL; list controller URLs like https://ctl-b.example:8480, comma-separated`,
          EXIT.usage,
        );
      }
    });
}

export type FollowDecision = { follow: true; url: string } | { follow: false; reason: string };

/**
 * May a call (and its token) go on from the standby at `from` to the `active` URL it names?
 * Only to a controller the operator listed, and never from https to http.
 */
export function mayFollow(from: string, active: string, allowed: readonly string[]): FollowDecision {
  let target: URL;
  try {
    target = new URL(normalizeBaseUrl(active));
  } catch {
    return {
      follow: false,
      reason: `the standby at ${from} names an active controller at ${JSON.stringify(active)}, which is not a URL; pass --controller with the active controller's address`,
    };
  }
  const url = target.toString().replace(/\/+$/, '');
  if (new URL(from).protocol === 'https:' && target.protocol !== 'https:') {
    return {
      follow: false,
      reason: `the standby at ${from} names the active controller at ${url}: not followed, the token would go from https to plain http; pass --controller with the active controller's https URL`,
    };
  }
  if (!allowed.some((a) => new URL(a).origin === target.origin)) {
    return {
      follow: false,
      reason:
        `the standby at ${from} names the active controller at ${url}, which is not a configured controller, ` +
        `so the token is not sent there: add ${url} to --controller-allow (or UNDERSTUDY_CONTROLLER_ALLOW), or pass --controller ${url}`,
    };
  }
  return { follow: true, url };
}
