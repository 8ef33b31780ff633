// Mocha global fixtures for the container suites: before any test, the engine answers and
// what crashed earlier runs left behind is removed, so a leaked container or network never
// breaks this run; after the last, what this run's timed-out tests left is removed too.
import './env.js';
import { ensureEngine } from './engine.js';
import { reapOrphans, reapOwn } from './reaper.js';

export async function mochaGlobalSetup(): Promise<void> {
  await ensureEngine();
  const reaped = await reapOrphans();
  if (reaped.containers + reaped.networks > 0) {
    console.log(
      `harness: removed ${reaped.containers} container(s), ${reaped.networks} network(s) left by earlier runs`,
    );
  }
}

export async function mochaGlobalTeardown(): Promise<void> {
  await ensureEngine();
  const reaped = await reapOwn();
  if (reaped.containers + reaped.networks > 0) {
    console.log(
      `harness: removed ${reaped.containers} container(s), ${reaped.networks} network(s) that tests of this run did not remove`,
    );
  }
}
