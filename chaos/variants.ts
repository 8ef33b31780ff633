// Unsafe agents, to prove the suite can fail. They exist only here: each is the shipped agent
// (dist/, as built) with a few lines of its compiled code replaced in a copy the suite mounts
// over /app/dist in the agents' hosts. Nothing in the product can switch one on.
//
// A variant must defeat every layer that guards the rule it breaks, or the layers it left
// would hide the bug and the "proof" would prove nothing: the one that ignores the self-fence
// deadline also disarms the lifeline reaper's kill, which would otherwise end its service at
// the must-be-out instant anyway.
//
// A patch names text that must occur exactly once in the file: when the code it targets
// changes, building the variant fails (saying which patch), rather than quietly producing an
// agent that is safe after all.
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../test/support/paths.js';
import type { Invariant } from './checker.js';

export interface Patch {
  /** File under dist/. */
  file: string;
  find: string;
  replace: string;
}

export interface Variant {
  name: string;
  /** The rule it breaks, in one sentence. */
  breaks: string;
  patches: readonly Patch[];
  /** The matrix scenarios in which it can misbehave (chaos/scenarios.ts). */
  scenarios: readonly string[];
  /** The invariants whose violation shows the broken rule: any other finding is not the proof. */
  caughtBy: readonly Invariant[];
}

export const VARIANTS: readonly Variant[] = [
  {
    name: 'ignores-self-fence',
    breaks: 'keeps its service logged in past the self-fence deadline D, and its reaper never kills',
    patches: [
      {
        file: 'pkg/lease/session.js',
        find: 'if (this.sinceRenewalMs() >= this.timing.selfFenceMs) {',
        replace: 'if (false) {',
      },
      {
        file: 'pkg/lease/session.js',
        find: 'return Math.max(0, this.timing.selfFenceMs - this.sinceRenewalMs());',
        replace: 'return 60000;',
      },
      {
        file: 'pkg/lease/renewal-worker.js',
        find: 'if (since >= input.selfFenceMs) {',
        replace: 'if (false) {',
      },
      {
        file: 'pkg/identity/lifeline.js',
        find: 'for p in $members; do kill -KILL -"$p" 2>/dev/null; done',
        replace: 'for p in $members; do :; done',
      },
    ],
    scenarios: ['cut-etcd-past-T', 'agent-freeze-past-T'],
    caughtBy: ['S1'],
  },
  {
    name: 'no-wait-after-revoke',
    breaks: 'logs in as soon as it holds the key, without waiting out the previous term',
    patches: [
      {
        file: 'pkg/lease/clearance.js',
        find: 'if (f.terms.length === 0)',
        replace: 'if (true)',
      },
    ],
    scenarios: ['revoke-two-identities'],
    caughtBy: ['S1', 'S3'],
  },
  {
    name: 'no-login-record',
    breaks: 'starts its service without writing the login record successors wait out',
    patches: [
      {
        file: 'pkg/lease/leadership.js',
        find: 'async setLoggedIn(loggedIn) {',
        replace:
          'async setLoggedIn(loggedIn) { if (loggedIn) { this.releaseHold ??= this.session.hold(); this.loggedInValue = true; return; }',
      },
    ],
    scenarios: ['host-kill', 'switchover'],
    caughtBy: ['S3'],
  },
  {
    name: 'ping-after-logout',
    breaks: 'keeps answering PING for the identity after it logged out',
    patches: [
      // Every layer that ends the answers: the unsubscribe at logout, the check before each
      // answer, and the one before each reply is sent.
      {
        file: 'pkg/identity/responder.js',
        find: 'this.active = false;\n        this.sub?.unsubscribe();',
        replace: 'return;',
      },
      {
        file: 'pkg/identity/responder.js',
        find: 'async answer(data, hdrs, arrival) {\n        if (!this.active || !this.ctx.mayAct())',
        replace: 'async answer(data, hdrs, arrival) {\n        if (false)',
      },
      {
        file: 'pkg/identity/responder.js',
        find: "if (typeof answer === 'string' || !msg.reply || !this.active || !this.ctx.mayAct())",
        replace: "if (typeof answer === 'string' || !msg.reply)",
      },
    ],
    scenarios: ['switchover'],
    caughtBy: ['S1'],
  },
];

export class VariantError extends Error {}

export function variantNamed(name: string): Variant {
  const found = VARIANTS.find((v) => v.name === name);
  if (!found)
    throw new VariantError(`no variant '${name}'; known: ${VARIANTS.map((v) => v.name).join(', ')}`);
  return found;
}

/** Apply a variant's patches to the text of one file; every patch must match exactly once. */
export function applyPatches(file: string, text: string, patches: readonly Patch[], variant: string): string {
  let out = text;
  for (const p of patches.filter((q) => q.file === file)) {
    const count = out.split(p.find).length - 1;
    if (count !== 1) {
      throw new VariantError(
        `variant ${variant}: dist/${file} has ${count} occurrences of ${JSON.stringify(p.find)} (want 1): the code it breaks has changed; update chaos/variants.ts`,
      );
    }
    out = out.replace(p.find, () => p.replace);
  }
  return out;
}

/** A copy of dist/ with the variant's patches; remove it with the returned function. */
export async function buildVariant(v: Variant): Promise<{ dist: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), `understudy-variant-${v.name}-`));
  const dist = join(dir, 'dist');
  try {
    await cp(join(repoRoot, 'dist'), dist, { recursive: true });
    for (const file of new Set(v.patches.map((p) => p.file))) {
      const path = join(dist, file);
      await writeFile(path, applyPatches(file, await readFile(path, 'utf8'), v.patches, v.name));
    }
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return { dist, remove: () => rm(dir, { recursive: true, force: true }) };
}
