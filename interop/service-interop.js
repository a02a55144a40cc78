'use strict';
// JavaScript half of the Rust <-> JavaScript service interop test.
// Usage: node service-interop.js http://127.0.0.1:9517
//
// Expects, on the relay already:
// - a service `rs-server` provided by the Rust server, and a service `rs-client` provided by a Rust
//   client, both with the APIs `add(a, b) -> a + b`, `publish(topic, value)` (publishes `value` to
//   that topic, then answers), `destroy(topic)` (destroys the topic, then answers) and
//   `notify(event, text)` (sends `event(serviceName, text)` to the caller, then answers), and
//   each with the topic `ticks` created;
// - a Rust client `rs-caller` that, on `call-js-service()` with an acknowledgement, calls
//   `mul(6, 7)` of the JavaScript service `js-svc`, subscribes to its topic `updates`, and answers
//   with the product; it then reports what its subscription sees back to `js-caller` as
//   `rust-saw(value)` (a publication) and `rust-saw("destroyed")`.
//
// This script connects `js-caller` (a seed-era client calling both Rust services the same way) and
// `js-svc` (a seed-era client service called by Rust). Prints `ok <step>` per step and
// `SERVICE INTEROP OK` at the end (exit 0); `FAIL <step>: <why>` and exit 1 on the first failure;
// gives up after 30 s.

const { createSeedClient, createSeedService } = require('./seed-client');

const url = process.argv[2];
if (!url) {
  console.error('usage: node service-interop.js <relay url>');
  process.exit(2);
}

const OVERALL_TIMEOUT_MS = 30000;
const WAIT_MS = 3000;
const QUIET_MS = 300;

let step = 'connect';
let finished = false;
const sockets = [];

function finish(code, line) {
  if (finished) return;
  finished = true;
  console.log(line);
  for (const s of sockets) s.close();
  // Let the close frames go out before the process ends.
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

function check(cond, why) {
  if (!cond) throw new Error(why);
}

setTimeout(() => fail(`timed out after ${OVERALL_TIMEOUT_MS / 1000} s`), OVERALL_TIMEOUT_MS);

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/** Waits until `cond()` holds, at most `ms`. */
async function until(what, cond, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`no ${what} within ${ms} ms`);
    await sleep(10);
  }
}

/** Calls `api` of `service` with an acknowledgement; rejects after `ms`. */
function call(client, service, api, ...args) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer from ${service}.${api}`)), WAIT_MS);
    client.emitService(service, api, ...args, (...answer) => {
      clearTimeout(timer);
      resolve(answer);
    });
  });
}

async function connect(client) {
  sockets.push(client);
  await client.waitConnected();
}

/** The same caller code against a service the server provides and one a client provides. */
async function exerciseRustService(me, svc) {
  step = `${svc}: add`;
  const sum = await call(me, svc, 'add', 2, 3);
  check(show(sum) === show([5]), `add(2, 3) answered ${show(sum)}`);
  ok(step);

  step = `${svc}: subscribe and receive a publication`;
  const seen = [];
  let destroyed = 0;
  await me.subscribeTopic(svc, 'ticks', (v) => seen.push(v), () => (destroyed += 1));
  const published = await call(me, svc, 'publish', 'ticks', 7);
  check(show(published) === show(['published']), `publish answered ${show(published)}`);
  await until('publication', () => seen.length >= 1);
  check(show(seen) === show([7]), `subscriber saw ${show(seen)}`);
  ok(step);

  step = `${svc}: emitClient reaches the caller as event(serviceName, ...args)`;
  const notes = [];
  me.from(svc).on('note', (text) => notes.push(text));
  await call(me, svc, 'notify', 'note', 'hello from the service');
  await until('note', () => notes.length >= 1);
  check(show(notes) === show(['hello from the service']), `notes ${show(notes)}`);
  me.from(svc).off('note');
  ok(step);

  step = `${svc}: unsubscribed, nothing arrives`;
  me.unsubscribeTopic(svc, 'ticks');
  await call(me, svc, 'publish', 'ticks', 8);
  await sleep(QUIET_MS);
  check(show(seen) === show([7]), `after unsubscribing the subscriber saw ${show(seen)}`);
  ok(step);

  step = `${svc}: destroyed topic tells its subscribers`;
  const again = [];
  await me.subscribeTopic(svc, 'ticks', (v) => again.push(v), () => (destroyed += 1));
  await call(me, svc, 'publish', 'ticks', 9);
  await until('publication after subscribing again', () => again.length >= 1);
  await call(me, svc, 'destroy', 'ticks');
  await until('TOPIC_BEING_DESTROYED', () => destroyed >= 1);
  check(destroyed === 1, `destroyed callbacks: ${destroyed}`);
  ok(step);

  step = `${svc}: publishing to the destroyed topic is an error`;
  let since = me.serverErrors.length;
  me.emitService(svc, 'publish', 'ticks', 10, () => fail('publish to a destroyed topic was acknowledged'));
  const publishError = await me.nextServerError(WAIT_MS, since);
  check(/not created/.test(publishError), `SERVER_ERROR ${show(publishError)}`);
  check(show(again) === show([9]), `subscriber saw ${show(again)} after the topic was destroyed`);
  ok(step);

  step = `${svc}: an unknown API is an error`;
  since = me.serverErrors.length;
  me.emitService(svc, 'no-such-api', 1, () => fail('an unknown API was acknowledged'));
  const apiError = await me.nextServerError(WAIT_MS, since);
  check(/no-such-api/.test(apiError), `SERVER_ERROR ${show(apiError)}`);
  ok(step);

  step = `${svc}: an empty topic name is refused as the seed does`;
  const refused = await call(me, svc, 'SUBSCRIBE_TOPIC', me.clientId, '');
  check(show(refused) === show(['topicName can not be empty']), `answer ${show(refused)}`);
  ok(step);
}

async function main() {
  const me = createSeedClient(url, 'js-caller', { reconnection: false });
  const svc = createSeedService(url, 'js-svc', { reconnection: false });
  await connect(me);
  await connect(svc);
  ok('connect');

  await exerciseRustService(me, 'rs-server');
  await exerciseRustService(me, 'rs-client');

  step = 'js-svc: a Rust client calls the JavaScript service and subscribes to its topic';
  const callers = [];
  svc.provideService('mul', (a, b, ack) => {
    callers.push([a, b]);
    if (typeof ack === 'function') ack(a * b);
  });
  svc.createTopic(['updates', 42]);
  const rustSaw = [];
  me.from('rs-caller').on('rust-saw', (v) => rustSaw.push(v));
  const product = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('rs-caller did not answer')), WAIT_MS);
    me.emitTo('rs-caller', 'call-js-service', (...answer) => {
      clearTimeout(timer);
      resolve(answer);
    });
  });
  check(show(product) === show([42]), `rs-caller answered ${show(product)}`);
  check(show(callers) === show([[6, 7]]), `mul was called with ${show(callers)}`);
  ok(step);

  step = 'js-svc: publishTopic reaches the Rust subscriber';
  let threw = false;
  try {
    svc.publishTopic('never-created', 1);
  } catch (e) {
    threw = true;
  }
  check(threw, 'publishing to a topic never created did not throw');
  svc.publishTopic('updates', 'u1');
  await until('rust-saw u1', () => rustSaw.length >= 1);
  check(show(rustSaw) === show(['u1']), `rs-caller saw ${show(rustSaw)}`);
  ok(step);

  step = 'js-svc: destroyTopic tells the Rust subscriber';
  svc.destroyTopic('updates');
  await until('rust-saw destroyed', () => rustSaw.length >= 2);
  check(show(rustSaw) === show(['u1', 'destroyed']), `rs-caller saw ${show(rustSaw)}`);
  ok(step);

  step = 'no unexpected server errors';
  const expected = (m) => /not created|no-such-api/.test(String(m));
  const unexpected = me.serverErrors.concat(svc.serverErrors).filter((m) => !expected(m));
  check(unexpected.length === 0, `SERVER_ERRORs ${show(unexpected)}`);
  ok(step);

  finish(0, 'SERVICE INTEROP OK');
}

main().catch((e) => fail(e && e.message ? e.message : String(e)));
