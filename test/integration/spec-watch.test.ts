// The agent's spec watcher against a real etcd: it reports the specs of the identities it is
// asked for — read at start and changed later — and neither decodes nor reports the others,
// invalid ones included (an agent hosting 2,000 of 10,000 identities must not validate all).
import { expect } from 'chai';
import type { Etcd3 } from 'etcd3';
import { deleteSpec, putSpec, SpecKeys, SpecWatcher } from '../../pkg/spec/store.js';
import { IntegrationCluster } from '../support/cluster.js';
import { rateBotSpec } from '../support/specs.js';
import { waitFor } from '../support/wait.js';

describe('agent: the spec watcher reports only the identities it hosts (real etcd)', function () {
  this.timeout(60_000);
  let harness: IntegrationCluster;
  let client: Etcd3;
  let watcher: SpecWatcher | undefined;

  before(async () => {
    harness = await IntegrationCluster.start({ nats: false });
    client = harness.client;
  });
  after(async () => {
    await watcher?.close();
    await harness?.close();
  });

  it('reports puts, deletes and invalid specs of hosted identities only, at start and after', async function () {
    const keys = new SpecKeys();
    await putSpec(client, rateBotSpec('hosted-1'));
    await putSpec(client, rateBotSpec('elsewhere-1'));
    await client.put(`${keys.specs()}elsewhere-bad`).value('{"not": "a spec"}');
    const events: string[] = [];
    watcher = await SpecWatcher.start(client, {
      put: (spec) => events.push(`put ${spec.name}`),
      delete: (identity) => events.push(`delete ${identity}`),
      invalid: (identity) => events.push(`invalid ${identity}`),
      wants: (identity) => identity.startsWith('hosted-'),
    });
    expect(events).to.deep.equal(['put hosted-1']);

    await putSpec(client, rateBotSpec('elsewhere-2'));
    await client.put(`${keys.specs()}hosted-bad`).value('{"not": "a spec"}');
    await deleteSpec(client, 'elsewhere-1');
    await putSpec(client, rateBotSpec('hosted-2'));
    await deleteSpec(client, 'hosted-1');
    await waitFor(() => events.length >= 4, { what: 'the hosted changes to be reported', timeoutMs: 10_000 });
    expect(events).to.deep.equal(['put hosted-1', 'invalid hosted-bad', 'put hosted-2', 'delete hosted-1']);
  });
});
