# faults-lib.sh - what the fault-injection tests share (sourced after
# daemon-lib.sh): a tomed armed to kill itself at the N-th pass through a
# kill point of common/fault.h (TOME_TEST_DIE_AFTER=POINT:N), the state
# directory reset between runs, and the counts the tests report.
#
# A kill is as abrupt as `kill -9` at exactly that moment, and it is
# repeatable: the same N kills at the same place every run, so every run
# of the suite tries the same states, and a failure names its POINT:N.

kills=0
lost=0  # committed data missing after a restart
wrong=0 # a state served that differs from an uninterrupted run's

cat >"$tmp/tomed.conf" <<EOF2
prefill_chunk = 32
restart_interval = 64
max_answer_tokens = 64
EOF2

# save_state NAME / reset_state NAME: keep the stopped daemon's state
# directory as NAME, and start a run from a copy of it.
save_state() {
    rm -rf "$tmp/saved-$1" && cp -a "$tmp/state" "$tmp/saved-$1"
}
reset_state() {
    rm -rf "$tmp/state" && cp -a "$tmp/saved-$1" "$tmp/state"
}

# start_normal: tomed with the test configuration, ready.
start_normal() {
    start_tomed --config "$tmp/tomed.conf" --model "$model" --log-level info
}

# start_armed POINT N: tomed armed to die at POINT's N-th pass; returns 1
# when it died before it was ready (start-up passed the point).
start_armed() {
    TOME_TEST_DIE_AFTER="$1:$2"
    export TOME_TEST_DIE_AFTER
    launch_tomed --config "$tmp/tomed.conf" --model "$model" --log-level info
    unset TOME_TEST_DIE_AFTER
    i=0
    until grep -q '^tomed ready$' "$tmp/tomed.log"; do
        grep -q "killed at $1:$2 " "$tmp/tomed.log" && return 1
        i=$((i + 1))
        [ "$i" -le 300 ] || { fail "tomed armed at $1:$2 neither started nor died"; return 1; }
        sleep 0.1
    done
    return 0
}

# expect_killed POINT N: tomed is gone, killed by SIGKILL at POINT:N.
expect_killed() {
    wait "$daemon_pid"
    status=$?
    daemon_pid=""
    checks=$((checks + 1))
    if [ "$status" -eq 137 ] && grep -q "killed at $1:$2 " "$tmp/tomed.log"; then
        kills=$((kills + 1))
    else
        fail "tomed was not killed at $1:$2 (exit $status): $(tail -3 "$tmp/tomed.log")"
    fi
}

# report WHAT: the figures, on one line.
report() {
    echo "$1: $kills kills, states lost $wrong, data lost $lost"
}
