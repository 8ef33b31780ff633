// Large prefixes read a page at a time, all pages at one revision.
//
// At 10,000 identities the specs alone are megabytes: read in one request, on an etcd also
// serving ten agents' start-up, it missed its ETCD_CALL_MS deadline, was retried whole, and
// every retry made the next one slower (seen in the scale benchmark: no agent got past reading
// its specs). Pages of PAGE_KEYS keys each finish well within the deadline; the first page's
// revision pins the others, so the result is still one consistent cut (a page refused because
// that revision was compacted fails the read, and the caller reads again).
import type { Etcd3, IKeyValue } from 'etcd3';
import { Range } from 'etcd3';
import { ETCD_CALL_MS, within } from './etcd.js';

/** Keys per request: a few hundred KiB of specs, far below etcd's 1.5 MiB request limit. */
export const PAGE_KEYS = 500;

/**
 * Every key under each prefix, at one revision (the first page's), `pageKeys` keys per
 * request. Returns one list per prefix, in key order, and the revision.
 */
export async function readPrefixes(
  client: Etcd3,
  prefixes: readonly string[],
  pageKeys = PAGE_KEYS,
): Promise<{ ranges: IKeyValue[][]; revision: bigint }> {
  let revision: string | undefined;
  const ranges: IKeyValue[][] = [];
  for (const prefix of prefixes) {
    const kvs: IKeyValue[] = [];
    const end = Range.prefix(prefix).end;
    let start = Buffer.from(prefix);
    for (;;) {
      let read = client.getAll().inRange({ start, end }).limit(pageKeys);
      if (revision !== undefined) read = read.revision(revision);
      const res = await read.options(within(ETCD_CALL_MS)).exec();
      revision ??= res.header.revision;
      kvs.push(...res.kvs);
      const last = res.kvs[res.kvs.length - 1];
      if (!res.more || !last) break;
      // The next page starts just after the last key read.
      start = Buffer.concat([last.key, Buffer.from([0])]);
    }
    ranges.push(kvs);
  }
  if (revision === undefined) throw new Error('readPrefixes needs at least one prefix');
  return { ranges, revision: BigInt(revision) };
}
