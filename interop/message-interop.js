'use strict';
// JavaScript half of the Rust <-> JavaScript message interop test.
// Usage: node message-interop.js http://127.0.0.1:9517
//
// Expects a Rust client `rust-peer` to be connected to the relay already. That peer accepts
// add-target, records `hello` events, answers `ask(n)` with `[n + 1]`, and after this script prints
// READY sends `greet("hi from rust")` and `question(21)` (expecting the reply [42]) to `js-peer`,
// then disconnects.
//
// Prints `ok <step>` per step and `DONE` at the end (exit 0); `FAIL <step>: <why>` and exit 1 on
// the first failure; gives up after 20 s.

const { createSeedClient } = require('./seed-client');

const url = process.argv[2];
if (!url) {
  console.error('usage: node message-interop.js <relay url>');
  process.exit(2);
}

const OWN_ID = 'js-peer';
const RUST_ID = 'rust-peer';
const OVERALL_TIMEOUT_MS = 20000;

let step = 'connect';
let finished = false;
let me = null;

function finish(code, line) {
  if (finished) return;
  finished = true;
  console.log(line);
  if (me) me.close();
  // Let the close frame go out before the process ends.
  setTimeout(() => process.exit(code), 50);
}

function fail(why) {
  finish(1, `FAIL ${step}: ${why}`);
}

function ok(name) {
  if (!finished) console.log(`ok ${name}`);
}

function show(v) {
  return JSON.stringify(v);
}

setTimeout(() => fail(`timed out after ${OVERALL_TIMEOUT_MS / 1000} s`), OVERALL_TIMEOUT_MS);

/** A promise with its resolve function, for events that may arrive before anyone waits. */
function deferred() {
  let resolve;
  const promise = new Promise((r) => (resolve = r));
  return { promise, resolve };
}

async function main() {
  me = createSeedClient(url, OWN_ID, { reconnection: false });
  // The relay reports refusals (e.g. a js-peer already connected) and rejected requests this way;
  // none is expected in this exchange.
  me.socket.on('SERVER_ERROR', (m) => fail(`SERVER_ERROR from the relay: ${show(m)}`));
  me.socket.on('disconnect', (reason) => fail(`disconnected from the relay (${reason})`));

  const greet = deferred();
  const question = deferred();
  const targetGone = deferred();
  let greetCount = 0;
  let questionCount = 0;

  me.from(RUST_ID).on('greet', (...args) => {
    greetCount += 1;
    greet.resolve(args);
  });
  me.from(RUST_ID).on('question', (n, ack) => {
    questionCount += 1;
    if (typeof ack !== 'function') {
      question.resolve({ n, error: 'question arrived without an acknowledgement callback' });
      return;
    }
    ack(n * 2);
    question.resolve({ n });
  });
  me.onP2pTargetDisconnect((id) => {
    if (id === RUST_ID) targetGone.resolve(me.fromListenerCount(RUST_ID));
  });
  // Accepting a peer costs nothing, and a Rust side that also adds js-peer must not hang on it.
  me.onAddP2pTarget(() => {});

  await me.waitConnected(5000);
  ok('connect');

  step = 'addP2pTarget rust-peer';
  try {
    await me.addP2pTarget(RUST_ID);
  } catch (e) {
    throw new Error(`${e.message} (is the Rust peer '${RUST_ID}' connected to ${url}?)`);
  }
  ok(step);

  step = 'emitTo hello';
  me.emitTo(RUST_ID, 'hello', 'from js', 42);
  ok(step);

  step = 'emitTo ask with ack';
  const reply = await new Promise((resolve) => me.emitTo(RUST_ID, 'ask', 41, (...r) => resolve(r)));
  if (reply[0] !== 42) throw new Error(`reply was ${show(reply)}, expected [42]`);
  ok(step);

  step = 'addP2pTarget nobody-xyz rejects';
  let rejection = null;
  try {
    await me.addP2pTarget('nobody-xyz');
  } catch (e) {
    rejection = e;
  }
  if (!rejection) throw new Error('addP2pTarget(nobody-xyz) resolved');
  if (!/not registered/.test(rejection.message)) {
    throw new Error(`rejected with ${show(rejection.message)}, expected "... not registered ..."`);
  }
  ok(step);

  console.log('READY');

  step = 'greet from rust-peer';
  const greetArgs = await greet.promise;
  if (greetArgs.length !== 1 || greetArgs[0] !== 'hi from rust') {
    throw new Error(`greet carried ${show(greetArgs)}, expected ["hi from rust"]`);
  }
  ok(step);

  step = 'question from rust-peer';
  const q = await question.promise;
  if (q.error) throw new Error(q.error);
  if (q.n !== 21) throw new Error(`question carried ${show(q.n)}, expected 21`);
  ok(step);

  step = 'MULTI_API_TARGET_DISCONNECT rust-peer';
  const left = await targetGone.promise;
  if (left !== 0) throw new Error(`${left} listener(s) from rust-peer left when it disconnected`);
  if (me.fromListenerCount(RUST_ID) !== 0) {
    throw new Error(`${me.fromListenerCount(RUST_ID)} listener(s) from rust-peer still registered`);
  }
  ok(step);

  step = 'event counts';
  if (greetCount !== 1 || questionCount !== 1) {
    throw new Error(`greet arrived ${greetCount} time(s), question ${questionCount} time(s); expected 1 each`);
  }
  ok(step);

  finish(0, 'DONE');
}

main().catch((e) => fail(e && e.message ? e.message : String(e)));
