// The demo identity's service: an exchange-rate bot. Run by the agent as a process service
// with `channel: fd3` (warm or cold):
//
//   node --import tsx pkg/demo/ratebot.ts --feed demo/rates.json [--state DIR]
//
// It answers `RATE <CUR>` from a JSON data feed that it re-reads when the file changes; PING,
// HELP and STATUS are answered by the agent, which adds this bot's status fields. It refuses
// requests while not logged in: a warm standby must never answer for the identity.
//
// With a state directory (--state, or UNDERSTUDY_STATE_DIR from the agent when the spec has
// state.dir) it keeps its state in DIR/state.json (requests served by every term, the rates
// it last served): the identity's spec.state.dir, which the leader snapshots and the next
// leader restores before login, so the count goes on where the last leader left it. It reads
// the file at each login and can quiesce for a snapshot (writes wait until the copy is done).
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
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

const { values } = parseArgs({ options: { feed: { type: 'string' }, state: { type: 'string' } } });
const feedPath = values.feed;
if (!feedPath) {
  process.stderr.write('usage: ratebot --feed <rates.json>\n');
  process.exit(2);
}

let feed: RateFeed | undefined;
/** Why the feed file was last rejected, for STATUS; null once a good one is read. */
let feedProblem: string | null = null;
let requestsServed = 0;

/** What the bot keeps in its state directory: carried from leader to leader by snapshots. */
const BotState = z.object({
  servedTotal: z.number().int().min(0),
  lastRates: z.record(z.string(), z.object({ rate: z.number(), asOf: z.string() })),
});
type BotState = z.infer<typeof BotState>;
/** --state, or the identity's state directory the agent names (spec state.dir). */
const stateDir = values.state ?? process.env.UNDERSTUDY_STATE_DIR;
let kept: BotState = { servedTotal: 0, lastRates: {} };
/** Writes wait while the agent copies the directory (a `snapshot` on fd 3). */
let holding = false;
let dirty = false;
let writing: Promise<void> = Promise.resolve();

async function loadState(): Promise<void> {
  if (!stateDir) return;
  try {
    const parsed = BotState.safeParse(JSON.parse(await readFile(join(stateDir, 'state.json'), 'utf8')));
    if (parsed.success) kept = parsed.data;
    else log.error({ stateDir }, 'state.json does not parse; starting from an empty state');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    kept = { servedTotal: 0, lastRates: {} };
  }
  log.info({ stateDir, servedTotal: kept.servedTotal }, 'state loaded');
}

/** Write state.json whole (temporary file, then rename): a copy never sees half a file. */
function saveState(): void {
  if (!stateDir) return;
  if (holding) {
    dirty = true;
    return;
  }
  const text = `${JSON.stringify(kept)}\n`;
  writing = writing
    .then(async () => {
      await mkdir(stateDir, { recursive: true });
      const temp = join(stateDir, '.state.json.tmp');
      await writeFile(temp, text);
      await rename(temp, join(stateDir, 'state.json'));
    })
    .catch((err: Error) => log.error({ err: err.message, stateDir }, 'could not save state'));
}

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
  kept.servedTotal++;
  kept.lastRates[currency] = { rate, asOf: feed.asOf };
  saveState();
  return { body: `1 ${feed.base} = ${rate} ${currency} (feed ${feed.asOf})` };
}

// Read the feed before saying ready: a standby that is ready can answer at once after login.
await loadFeed(feedPath);
const channel = serveChannel({
  async onLogin(ctx) {
    // The agent restored the newest snapshot into the state directory before this login.
    await loadState();
    log.info({ identity: ctx.identity, node: ctx.node, token: String(ctx.token) }, 'logged in');
  },
  onLogout() {
    log.info('logged out');
  },
  onRequest(req) {
    if (!channel.loggedIn) return { body: 'not logged in (standing by)', error: 'unavailable' };
    return answer(req.command);
  },
  async onSnapshot() {
    holding = true;
    await writing;
    return () => {
      holding = false;
      if (dirty) {
        dirty = false;
        saveState();
      }
    };
  },
  onStatus() {
    return {
      ...(stateDir ? { servedTotal: kept.servedTotal, ratesKept: Object.keys(kept.lastRates).length } : {}),
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
