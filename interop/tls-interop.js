'use strict';
// The JavaScript side of the TLS test (tests/tls.rs): socket.io-client 4 against a relay that
// serves https:// with a certificate from the test's own CA.
// Usage: node tls-interop.js '<json>' where json is {"url": "https://...", "ca": "<PEM>",
//   "peer": "<id of a Rust client that answers 'echo' with 'echo'>"}
// Prints `ok <check>` or `FAIL <check>: <why>` per check; exits 0 only if every check passed.

const ioV4 = require('socket.io-client-v4');

const { url, ca, peer } = JSON.parse(process.argv[2] || '{}');
if (!url || !ca || !peer) {
  console.error("usage: node tls-interop.js '{\"url\": ..., \"ca\": ..., \"peer\": ...}'");
  process.exit(2);
}

const OVERALL_TIMEOUT_MS = 30000;
const STEP_TIMEOUT_MS = 5000;

let failures = 0;
const sockets = [];

const overall = setTimeout(() => {
  console.log(`FAIL overall: not finished within ${OVERALL_TIMEOUT_MS / 1000} s`);
  process.exit(1);
}, OVERALL_TIMEOUT_MS);

async function check(name, fn) {
  try {
    await fn();
    console.log(`ok ${name}`);
  } catch (e) {
    failures += 1;
    console.log(`FAIL ${name}: ${e && e.message ? e.message : String(e)}`);
  }
}

function assert(cond, why) {
  if (!cond) throw new Error(why);
}

function withTimeout(promise, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), STEP_TIMEOUT_MS);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Connects as `clientId` with `tls` options; resolves with {socket} or {error, socket}. */
function connect(clientId, tls) {
  const opts = Object.assign(
    { transports: ['websocket'], forceNew: true, reconnection: false, query: { clientId } },
    tls,
  );
  const socket = ioV4(url, opts);
  sockets.push(socket);
  return withTimeout(
    new Promise((resolve) => {
      socket.once('connect', () => resolve({ socket }));
      socket.once('connect_error', (error) => resolve({ error, socket }));
    }),
    `${clientId} connects or fails`,
  );
}

async function main() {
  await check('a client without the CA cannot connect', async () => {
    const { error } = await connect('js-untrusting', {});
    assert(error !== undefined, 'it connected');
  });
  await check('a client trusting the CA sends to a Rust client and gets its answer', async () => {
    const { socket, error } = await connect('js-tls', { ca, rejectUnauthorized: true });
    assert(error === undefined, `refused: ${error && error.message}`);
    const answer = await withTimeout(
      new Promise((resolve) => {
        socket.emit(
          'P2P_EMIT_ACKNOWLEDGE',
          { targetClientId: peer, event: 'echo', args: ['js-tls', 'over wss'] },
          (...a) => resolve(a),
        );
      }),
      'the answer',
    );
    assert(answer[0] === 'echo', `answered ${JSON.stringify(answer)}`);
  });
  for (const s of sockets) s.close();
  clearTimeout(overall);
  if (failures === 0) console.log('all checks passed');
  process.exit(failures === 0 ? 0 : 1);
}

main();
