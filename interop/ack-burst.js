'use strict';
// A burst of acknowledged room operations from one socket.io-client (2.x or 4.x), sent without
// waiting: every one must be acknowledged, with success or with an error, or the relay must
// disconnect the client with a reason. Nothing may go unanswered while the client stays
// connected.
// Usage: node ack-burst.js <relay url> <2|4> <count>
//
// Alternates JOIN_ROOM and LEAVE_ROOM over ten room names, so the rooms-per-client limit is never
// the answer. Prints `acked <n> errors <e> of <count>` and `all checks passed` (exit 0), or
// `FAIL <why>` (exit 1); gives up after 120 s.

const { versionArg, connect } = require('./client-versions');

const USAGE = 'usage: node ack-burst.js <relay url> <2|4> <count>';
const url = process.argv[2];
const version = versionArg(process.argv[3], USAGE);
const count = Number(process.argv[4]);
if (!url || !Number.isInteger(count) || count <= 0) {
  console.error(USAGE);
  process.exit(2);
}

let done = false;
function finish(code, line) {
  if (done) return;
  done = true;
  console.log(line);
  process.exit(code);
}
setTimeout(() => finish(1, `FAIL only ${acked} of ${count} acknowledged within 120 s`), 120000);

let acked = 0;
let errors = 0;
let serverError = null;
const socket = connect(version, url, `burst-v${version}`);
// The notice of a disconnect; other notices (a refused event's "busy") may arrive after it.
socket.on('SERVER_ERROR', (text) => {
  if (String(text).includes('disconnected')) serverError = String(text);
});
socket.on('disconnect', (reason) => {
  if (acked === count) return;
  if (serverError) {
    finish(0, `disconnected with a reason after ${acked} of ${count}: ${serverError}\nall checks passed`);
  } else {
    finish(1, `FAIL disconnected (${reason}) after ${acked} of ${count} acknowledgements, with no reason`);
  }
});
socket.on('connect_error', (e) => finish(1, `FAIL connect: ${e && e.message}`));
socket.on('connect', () => {
  console.log('ok connected');
  for (let i = 0; i < count; i++) {
    const op = i % 2 === 0 ? 'JOIN_ROOM' : 'LEAVE_ROOM';
    socket.emit(op, `room-${Math.floor(i / 2) % 10}`, (...args) => {
      acked += 1;
      if (args.length > 0 && args[0] != null) errors += 1;
      if (acked === count) {
        console.log(`ok acked ${acked} errors ${errors} of ${count}`);
        socket.close();
        finish(0, 'all checks passed');
      }
    });
  }
});
