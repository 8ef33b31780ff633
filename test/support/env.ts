// Environment the harness needs before testcontainers is used. Imported first by the harness.
//
// Ryuk (testcontainers' reaper container) needs an image from a registry, which this machine
// cannot reach; the harness reaps its own leftovers instead (see reaper.ts). Users who have
// Ryuk can set TESTCONTAINERS_RYUK_DISABLED=false.
process.env.TESTCONTAINERS_RYUK_DISABLED ??= 'true';
// Without an override, testcontainers starts a helper container (pulled from a registry) to
// discover the host's address; every mapped port here is on localhost.
process.env.TESTCONTAINERS_HOST_OVERRIDE ??= 'localhost';
