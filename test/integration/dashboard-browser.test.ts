// The dashboard in a real browser (Debian's Chromium through playwright-core) against a real
// cluster: etcd and NATS in containers, two agents and a controller as processes, the demo
// rate bot as the service. What an operator sees is judged against etcd, not the page alone.
import { expect } from 'chai';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { readLeader } from '../../pkg/lease/index.js';
import { putSpec } from '../../pkg/spec/store.js';
import { IntegrationCluster } from '../support/cluster.js';
import { TEST_TOKENS, type ControllerProcess } from '../support/controllers.js';
import { repoRoot } from '../support/paths.js';
import { rateBotSpec } from '../support/specs.js';

/** Debian's package; the setup script installs it. */
const CHROMIUM = process.env.UNDERSTUDY_CHROMIUM ?? '/usr/bin/chromium';
/** Headless, no sandbox (root in CI), and nothing that reaches beyond this machine. */
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
/** Where the test leaves its screenshots (one is copied to docs/ by hand). */
const SCREENSHOTS = join(repoRoot, '.understudy', 'test-artifacts', 'dashboard');
/** A handover through the controller, including a warm bot's login, on a loaded machine. */
const HANDOVER_TIMEOUT_MS = 60_000;
const IDENTITY = 'dash';

describe('dashboard in a real browser', function () {
  this.timeout(300_000);
  let cluster: IntegrationCluster;
  let ctl: ControllerProcess;
  let browser: Browser;

  before(async () => {
    cluster = await IntegrationCluster.start();
    await putSpec(cluster.client, rateBotSpec(IDENTITY, { description: 'exchange-rate bot' }));
    const a = await cluster.startAgent({ node: 'a', identities: { [IDENTITY]: null }, priority: 10 });
    await a.waitForState(IDENTITY, 'leader', { timeoutMs: HANDOVER_TIMEOUT_MS });
    const b = await cluster.startAgent({ node: 'b', identities: { [IDENTITY]: null }, priority: 5 });
    await b.waitForState(IDENTITY, 'standby', { timeoutMs: HANDOVER_TIMEOUT_MS });
    ctl = await cluster.startController({ name: 'c1', extra: { switchover: { deadlineMs: 40_000 } } });
    await ctl.waitForActive();
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
    await mkdir(SCREENSHOTS, { recursive: true });
  });

  afterEach(function () {
    return cluster.reportFailure(this.currentTest);
  });

  after(async () => {
    await browser?.close();
    await cluster?.close();
  });

  async function signedIn(token: string): Promise<Page> {
    const context = await browser.newContext({ viewport: { width: 1400, height: 800 } });
    const page = await context.newPage();
    await page.goto(`${ctl.url}/`);
    await page.fill('input[name=token]', token);
    await page.click('button[type=submit]');
    await page.locator(`#identity-${IDENTITY}`).waitFor();
    return page;
  }

  function leaderCell(page: Page) {
    return page.locator(`#identity-${IDENTITY} td.leader`);
  }

  it('shows the leader; a click switches over; the page shows the new leader without a reload', async () => {
    const page = await signedIn(TEST_TOKENS.operator);
    expect((await leaderCell(page).innerText()).trim()).to.equal('a');
    await page.screenshot({ path: join(SCREENSHOTS, 'overview-before.png'), fullPage: true });
    // A reload would lose this: the new leader must arrive over the live stream.
    await page.evaluate(() => Object.assign(globalThis, { stillTheSamePage: true }));

    await page.click(`#identity-${IDENTITY} button[data-action=switchover]`);
    const confirm = page.locator('#confirm-switchover');
    await confirm.waitFor({ state: 'visible' });
    await page.screenshot({ path: join(SCREENSHOTS, 'switchover-confirm.png') });
    await confirm.locator('select[name=to]').selectOption('b');
    await confirm.locator('input[name=reason]').fill('patching a');
    await confirm.locator('button[type=submit]').click();

    await page
      .locator(`#identity-${IDENTITY} td.leader`, { hasText: /^\s*b\s*$/ })
      .waitFor({ timeout: HANDOVER_TIMEOUT_MS });
    expect(
      await page.evaluate(() => (globalThis as { stillTheSamePage?: boolean }).stillTheSamePage),
    ).to.equal(true);
    expect(await confirm.isVisible(), 'the confirmation closes once accepted').to.equal(false);
    // The page is not the judge: etcd says who holds the key.
    expect((await readLeader(cluster.client, IDENTITY))?.record.node).to.equal('b');
    expect(await page.locator('#notice').innerText()).to.match(/switchover .* requested: a → b/);
    await page.screenshot({ path: join(SCREENSHOTS, 'overview-after.png'), fullPage: true });

    // The identity's page draws both terms, and the history names who asked and why.
    await page.click(`#identity-${IDENTITY} a`);
    await page.locator('svg.timeline rect.bar.leader').first().waitFor();
    const leaders = await page
      .locator('svg.timeline rect.bar.leader')
      .evaluateAll((bars) =>
        bars.map((b) => (b as { getAttribute(name: string): string | null }).getAttribute('data-node')),
      );
    expect(leaders).to.include('a').and.include('b');
    expect(await page.locator('table.history').innerText()).to.contain('patching a');
    await page.screenshot({ path: join(SCREENSHOTS, 'identity.png'), fullPage: true });
    await page.context().close();
  });

  it('shows a viewer the same identity and no button; its hand-made action is refused', async () => {
    const page = await signedIn(TEST_TOKENS.viewer);
    expect((await leaderCell(page).innerText()).trim()).to.be.oneOf(['a', 'b']);
    expect(await page.locator('button[data-action]').count()).to.equal(0);
    const before = (await readLeader(cluster.client, IDENTITY))?.record.node;
    const res = await page.request.post(`${ctl.url}/ui/identities/${IDENTITY}/switchover`, {
      headers: { 'HX-Request': 'true' },
      form: { reason: 'viewer tries' },
    });
    expect(res.status()).to.equal(403);
    expect((await readLeader(cluster.client, IDENTITY))?.record.node).to.equal(before);
    await page.screenshot({ path: join(SCREENSHOTS, 'viewer.png'), fullPage: true });
    await page.context().close();
  });
});
