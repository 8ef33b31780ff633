// Access lists: show, change, approve and deny callers of an identity.
import { type AclChangeBody, type AclView } from '../api/schema.js';
import type { BlockedCaller } from '../spec/schema.js';
import { CliError, EXIT } from './exit.js';
import { renderAcl } from './render.js';
import { context, fieldsAsOptions, routes, type ControllerOptions } from './controller-context.js';

export const ACL_USAGE = [
  'understudy acl <identity>                                 show the lists and pending requests',
  'understudy acl <identity> approve <caller> [nkey]           nkey: the key that asked, if it asked with several',
  'understudy acl <identity> deny <caller> [nkey] [--block]',
  'understudy acl <identity> add <contacts|authorized|blocked> <name> [nkey]',
  'understudy acl <identity> remove <contacts|authorized|blocked> <name>',
  'understudy acl <identity> open|close',
].join('\n  ');

const usage = (problem: string) => new CliError(`${problem}; usage:\n  ${ACL_USAGE}`, EXIT.usage);

const ACL_LISTS = ['contacts', 'authorized', 'blocked'] as const;
type AclList = (typeof ACL_LISTS)[number];
const isAclList = (value: string | undefined): value is AclList => ACL_LISTS.includes(value as AclList);

/** A NATS user public key (pkg/spec PublicNkey): names are lowercase, so these never clash. */
const looksLikeNkey = (value: string) => /^U[A-Z2-7]{55}$/.test(value);

/** `approve|deny <caller> [nkey]`: the optional key that asked. */
function pendingKey(action: string, args: readonly string[]): string | undefined {
  if (args.length < 1 || args.length > 2)
    throw usage(`acl ${action} takes a caller name and optionally its nkey`);
  const key = args[1];
  if (key !== undefined && !looksLikeNkey(key)) throw usage(`'${key}' is not a NATS user public nkey`);
  return key;
}

export interface AclRequest {
  path: string;
  body?: unknown;
  /** What was done, for the line above the lists. */
  done: string;
}

/** The request an `acl` command line stands for; undefined: just show. Pure, for tests. */
export function aclRequest(
  identity: string,
  action: string | undefined,
  args: readonly string[],
  flags: { block?: boolean },
): AclRequest | undefined {
  const want = (n: number, form: string) => {
    if (args.length !== n) throw usage(`acl ${action} takes ${form}`);
  };
  if (flags.block && action !== 'deny') throw usage('--block goes with deny');
  switch (action) {
    case undefined:
    case 'show':
      want(0, 'no arguments');
      return undefined;
    case 'approve': {
      const key = pendingKey(action, args);
      return {
        path: routes.approve(identity, args[0]!),
        body: key ? { key } : {},
        done: `${args[0]}${key ? ` (key ${key})` : ''} approved`,
      };
    }
    case 'deny': {
      const key = pendingKey(action, args);
      return {
        path: routes.deny(identity, args[0]!),
        body: { block: flags.block ?? false, ...(key && { key }) },
        done: `${args[0]}${key ? ` (key ${key})` : ''} denied${flags.block ? ' and blocked' : ''}`,
      };
    }
    case 'add':
      return aclAdd(identity, args);
    case 'remove': {
      want(2, 'a list and a name');
      const [list, name] = args as [string, string];
      if (!isAclList(list)) throw usage(`no list ${list}`);
      const body: AclChangeBody = { op: 'remove', list, name };
      return { path: routes.acl(identity), body, done: `${name} removed from ${list}` };
    }
    case 'open':
    case 'close':
      want(0, 'no arguments');
      return {
        path: routes.acl(identity),
        body: { op: 'open', open: action === 'open' } satisfies AclChangeBody,
        done: action === 'open' ? 'opened to every caller' : 'closed to callers on no list',
      };
    default:
      throw usage(`unknown acl action ${action}`);
  }
}

function aclAdd(identity: string, words: readonly string[]): AclRequest {
  const [list, name, nkey] = words;
  if (words.length < 2 || words.length > 3 || !isAclList(list) || !name) {
    throw usage(
      'acl add takes a list (contacts, authorized or blocked), a name and, for the first two, an nkey',
    );
  }
  let body: AclChangeBody;
  if (list === 'blocked') {
    // Block by name, by key, or both: a lone key is recognised by its shape.
    const caller: BlockedCaller = nkey ? { name, nkey } : looksLikeNkey(name) ? { nkey: name } : { name };
    body = { op: 'block', caller };
  } else {
    if (!nkey) throw usage(`${list} entries need the caller's nkey (U...)`);
    body = { op: 'add', list, caller: { name, nkey } };
  }
  return { path: routes.acl(identity), body, done: `${name} added to ${list}` };
}

export async function acl(
  opts: ControllerOptions,
  identity: string,
  action: string | undefined,
  args: string[],
  flags: { block?: boolean },
): Promise<number> {
  const request = aclRequest(identity, action, args, flags);
  const { api, out } = await context(opts);
  const view = request
    ? await api.post<AclView>(request.path, request.body, {
        describeField: fieldsAsOptions({ 'caller.nkey': '<nkey>', 'caller.name': '<name>', name: '<name>' }),
      })
    : await api.get<AclView>(routes.acl(identity));
  out.result(view, () => `${request ? `${identity}: ${request.done}\n` : ''}${renderAcl(view, Date.now())}`);
  return EXIT.ok;
}
