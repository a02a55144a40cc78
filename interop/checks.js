'use strict';
// The reporting side of the check scripts: `ok <check>` or `FAIL <check>: <why>` per check, a last
// line (`all checks passed` or `<n> check(s) failed`), exit status 0 only when every check passed,
// and an overall deadline after which the script prints FAIL and exits 1 whatever it waits for.

function show(v) {
  const text = JSON.stringify(v);
  if (text === undefined) return String(v);
  return text.length > 300 ? `${text.slice(0, 300)}... (${text.length} chars)` : text;
}

function assert(cond, why) {
  if (!cond) throw new Error(why);
}

/** Rejects with "timed out ... waiting for `what`" when `promise` is not settled within `ms`. */
function withTimeout(promise, what, ms) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** A promise for the first time `register(resolve)` calls back, within `ms`. */
function waitFor(what, register, ms) {
  return withTimeout(new Promise((resolve) => register(resolve)), what, ms);
}

function delay(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * A report for one script run. `check(name, fn)` runs `fn` and prints its line; `finish()` closes
 * what was registered with `closeAtEnd`, prints the last line and exits. After `overallMs` the
 * script exits with `FAIL overall` whatever is still pending.
 */
function createReport(overallMs) {
  let failures = 0;
  let passed = 0;
  let finished = false;
  const toClose = [];

  const overall = setTimeout(() => {
    console.log(`FAIL overall: not finished within ${overallMs / 1000} s`);
    for (const s of toClose) s.close();
    process.exit(1);
  }, overallMs);

  // An exception no handler caught (one a client library throws out of its packet handling, say)
  // is a failure to report, not a silent end of the script.
  process.on('uncaughtException', (e) => report.finish(new Error(`uncaught exception: ${e && e.stack ? e.stack : e}`)));

  const report = {
    ok(name) {
      passed += 1;
      console.log(`ok ${name}`);
    },
    fail(name, why) {
      failures += 1;
      console.log(`FAIL ${name}: ${why}`);
    },
    async check(name, fn) {
      try {
        const detail = await fn();
        report.ok(detail ? `${name} (${detail})` : name);
        return true;
      } catch (e) {
        report.fail(name, e && e.message ? e.message : String(e));
        return false;
      }
    },
    failures: () => failures,
    closeAtEnd(socket) {
      toClose.push(socket);
      return socket;
    },
    async finish(error) {
      if (finished) return;
      finished = true;
      if (error) report.fail('script', error && error.stack ? error.stack : String(error));
      for (const s of toClose) s.close();
      clearTimeout(overall);
      // Let the close frames go out before the process ends.
      await delay(50);
      console.log(failures === 0 ? `all checks passed (${passed})` : `${failures} check(s) failed`);
      process.exit(failures === 0 ? 0 : 1);
    },
  };
  return report;
}

module.exports = { show, assert, withTimeout, waitFor, delay, createReport };
