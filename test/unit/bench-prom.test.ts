import { expect } from 'chai';
import { buckets, byLabel, parseProm, total } from '../../bench/prom.js';

// How the benches read etcd's and the agents' /metrics pages.
describe('the benches: Prometheus text', () => {
  const page = [
    '# HELP grpc_server_handled_total Total number of RPCs completed on the server.',
    '# TYPE grpc_server_handled_total counter',
    'grpc_server_handled_total{grpc_code="OK",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 12',
    'grpc_server_handled_total{grpc_code="OK",grpc_method="Txn",grpc_service="etcdserverpb.KV",grpc_type="unary"} 30',
    'grpc_server_handled_total{grpc_code="Unavailable",grpc_method="Txn",grpc_service="etcdserverpb.KV",grpc_type="unary"} 2',
    '# TYPE understudy_session_stops_total counter',
    '# TYPE understudy_session_renewals_total counter',
    'understudy_session_renewals_total 7',
    '# TYPE etcd_disk_wal_fsync_duration_seconds histogram',
    'etcd_disk_wal_fsync_duration_seconds_bucket{le="0.001"} 5',
    'etcd_disk_wal_fsync_duration_seconds_bucket{le="+Inf"} 9',
    'etcd_disk_wal_fsync_duration_seconds_bucket{le="0.002"} 8',
    'etcd_disk_wal_fsync_duration_seconds_sum 0.01',
    'etcd_disk_wal_fsync_duration_seconds_count 9',
    'understudy_build_info{version="a \\"quoted\\" b\\nc\\\\d"} 1',
    '',
  ].join('\n');
  const scrape = parseProm(page);

  it('sums a metric over its label sets, or over those kept', () => {
    expect(total(scrape, 'grpc_server_handled_total')).to.equal(44);
    expect(total(scrape, 'grpc_server_handled_total', (l) => l.grpc_method === 'Txn')).to.equal(32);
    expect(total(scrape, 'understudy_session_renewals_total')).to.equal(7);
  });

  it('tells a declared metric with no sample (0) from one that is not there (undefined)', () => {
    expect(total(scrape, 'understudy_session_stops_total')).to.equal(0);
    expect(total(scrape, 'understudy_lifeline_kills_total')).to.equal(undefined);
  });

  it('sums by one label', () => {
    expect([...byLabel(scrape, 'grpc_server_handled_total', 'grpc_method')]).to.deep.equal([
      ['Range', 12],
      ['Txn', 32],
    ]);
  });

  it("reads a histogram's buckets in order of their bound, +Inf last", () => {
    expect(buckets(scrape, 'etcd_disk_wal_fsync_duration_seconds')).to.deep.equal([
      [0.001, 5],
      [0.002, 8],
      [Infinity, 9],
    ]);
  });

  it('reads escaped quotes, newlines and backslashes in a label value', () => {
    const info = scrape.samples.find((s) => s.name === 'understudy_build_info');
    expect(info?.labels.version).to.equal('a "quoted" b\nc\\d');
  });
});
