// Mocha global fixtures for integration tests: before any test, remove what crashed earlier
// runs left behind, so a leaked container or network never breaks this run.
import './env.js';
import { reapOrphans } from './reaper.js';

export async function mochaGlobalSetup(): Promise<void> {
  const reaped = await reapOrphans();
  if (reaped.containers + reaped.networks > 0) {
    console.log(
      `harness: removed ${reaped.containers} container(s), ${reaped.networks} network(s) left by earlier runs`,
    );
  }
}
