// The demo identity's service: an exchange-rate bot. Run by the agent as a process service
// with `channel: fd3` (warm or cold):
//
//   node --import tsx pkg/demo/ratebot.ts --feed demo/rates.json
//
// It answers `RATE <CUR>` from a JSON data feed that it re-reads when the file changes; PING,
// HELP and STATUS are answered by the agent, which adds this bot's status fields. It refuses
// requests while not logged in: a warm standby must never answer for the identity.
import { readFile } from 'node:fs/promises';
import { watchFile, type Stats } from 'node:fs';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { z } from 'zod';
import type { ServiceReply } from '../identity/driver.js';
import { serveChannel } from '../identity/service.js';
import { parseCommand } from '../identity/wire.js';

/** How often the feed file's mtime is checked; feeds change every few minutes at most. */
const FEED_POLL_MS = 1_000;
const USAGE = 'usage: RATE <CUR>, e.g. RATE USD';

const Currency = z.string().regex(/^[A-Z]{3}$/, 'must be a three-letter ISO 4217 code such as USD');
export const RateFeed = z.strictObject({
  base: Currency,
  asOf: z.iso.datetime({ offset: true }),
  rates: z
    .record(Currency, z.number().positive().finite())
    .refine((rates) => Object.keys(rates).length > 0, 'must list at least one currency'),
});
export type RateFeed = z.infer<typeof RateFeed>;

// Logs go to stderr; the agent records them with the identity and pid.
const log = pino({ name: 'ratebot' }, pino.destination(2));

const { values } = parseArgs({ options: { feed: { type: 'string' } } });
const feedPath = values.feed;
if (!feedPath) {
  process.stderr.write('usage: ratebot --feed <rates.json>\n');
  process.exit(2);
}

let feed: RateFeed | undefined;
/** Why the feed file was last rejected, for STATUS; null once a good one is read. */
let feedProblem: string | null = null;
let requestsServed = 0;

async function loadFeed(path: string): Promise<void> {
  let parsed: ReturnType<typeof RateFeed.safeParse>;
  try {
    parsed = RateFeed.safeParse(JSON.parse(await readFile(path, 'utf8')));
  } catch (err) {
    feedProblem = `cannot read ${path}: ${(err as Error).message}`;
    log.error({ feed: path, problem: feedProblem }, 'rate feed rejected; keeping the last good rates');
    return;
  }
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    feedProblem = `${path}: ${issue?.path.join('.') || 'feed'}: ${issue?.message ?? 'invalid'}`;
    log.error({ feed: path, problem: feedProblem }, 'rate feed rejected; keeping the last good rates');
    return;
  }
  feed = parsed.data;
  feedProblem = null;
  log.info({ feed: path, asOf: feed.asOf, currencies: Object.keys(feed.rates).length }, 'rate feed loaded');
}

const changed = (now: Stats, before: Stats) =>
  now.mtimeMs !== before.mtimeMs || now.ino !== before.ino || now.size !== before.size;

function answer(command: string): ServiceReply {
  const { verb, args } = parseCommand(command);
  if (verb !== 'RATE') {
    return {
      body: `unknown command ${verb || '(empty)'}: this bot answers ${USAGE.slice('usage: '.length)}`,
      error: 'unknown-command',
    };
  }
  const words = args.split(/\s+/).filter(Boolean);
  if (words.length !== 1) return { body: USAGE, error: 'bad-request' };
  if (!feed) {
    return { body: `no rate feed loaded yet (${feedProblem ?? 'still reading it'})`, error: 'unavailable' };
  }
  const currency = words[0]!.toUpperCase();
  const rate = feed.rates[currency];
  if (rate === undefined) {
    const known = Object.keys(feed.rates).sort().join(', ');
    return { body: `unknown currency ${currency}; known: ${known}`, error: 'bad-request' };
  }
  requestsServed++;
  return { body: `1 ${feed.base} = ${rate} ${currency} (feed ${feed.asOf})` };
}

// Read the feed before saying ready: a standby that is ready can answer at once after login.
await loadFeed(feedPath);
const channel = serveChannel({
  onLogin(ctx) {
    log.info({ identity: ctx.identity, node: ctx.node, token: String(ctx.token) }, 'logged in');
  },
  onLogout() {
    log.info('logged out');
  },
  onRequest(req) {
    if (!channel.loggedIn) return { body: 'not logged in (standing by)', error: 'unavailable' };
    return answer(req.command);
  },
  onStatus() {
    return {
      lastFeed: feed?.asOf ?? null,
      currencies: feed ? Object.keys(feed.rates).sort() : [],
      requestsServed,
      loggedIn: channel.loggedIn,
      feedProblem,
    };
  },
});

watchFile(feedPath, { interval: FEED_POLL_MS }, (now, before) => {
  if (changed(now, before)) void loadFeed(feedPath);
});
