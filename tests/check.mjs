// check.mjs - what the Node clients of the tests share: counted checks
// that print FAIL lines, and the exit status they make.
let checks = 0;
let failures = 0;

// check(WHAT, OK, DETAIL): count one check; a failure prints WHAT and DETAIL.
export function check(what, ok, detail) {
    checks++;
    if (!ok) {
        failures++;
        console.log(`FAIL: ${what}${detail === undefined ? '' : ': ' + JSON.stringify(detail)}`);
    }
}

// finish(WHAT): print the counts and exit 0 only when nothing failed.
export function finish(what) {
    console.log(`${checks} ${what}, ${failures} failed`);
    process.exit(failures === 0 ? 0 : 1);
}
