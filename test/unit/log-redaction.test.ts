import { expect } from 'chai';
import { listensOnLoopbackOnly } from '../../pkg/http/index.js';
import { withoutUserinfo } from '../../pkg/log/index.js';

describe('what may be logged about where we connect and listen', function () {
  it('a server URL loses its userinfo (a credential), and keeps everything else', function () {
    expect(withoutUserinfo('nats://gateway:s3cret@nats-1:4222')).to.equal('nats://[redacted]@nats-1:4222');
    expect(withoutUserinfo('tls://token@[::1]:4222/x?y=1')).to.equal('tls://[redacted]@[::1]:4222/x?y=1');
    expect(withoutUserinfo('nats://nats-1:4222')).to.equal('nats://nats-1:4222');
    // An @ after the host belongs to a path or a query, not to userinfo.
    expect(withoutUserinfo('http://host:80/a@b')).to.equal('http://host:80/a@b');
    expect(withoutUserinfo('not a url: a@b')).to.equal('not a url: a@b');
  });

  it('only loopback addresses count as local for an API without TLS', function () {
    for (const local of ['127.0.0.1:8480', '127.1.2.3:0', 'localhost:8480', '[::1]:8480']) {
      expect(listensOnLoopbackOnly(local), local).to.equal(true);
    }
    for (const wide of ['0.0.0.0:8480', '[::]:8480', '10.0.0.5:8480', 'ctl.example.com:8480']) {
      expect(listensOnLoopbackOnly(wide), wide).to.equal(false);
    }
  });
});
