#!/usr/bin/env bash
# tests/run-script.sh: scripts/run as a new user runs it, checked from outside.
#
# With LISTEN_ADDR, SPOOL_DIR and CARGO_TARGET_DIR set, and DATABASE_URL naming a database
# that does not exist yet (on the server of DATABASE_URL, by default
# postgres://postgres@127.0.0.1:5432), scripts/run must build, create the database, answer
# /readyz, print a webhook URL that stores a call, write a log without escape codes, and,
# stopped with SIGTERM while an event waits in the spool, say so in its last line.
# Run by .ci/run after scripts/test; it takes a release build (minutes, the first time).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SCRIPT=tests/run-script.sh
# shellcheck source=scripts/lib/postgres.sh
. scripts/lib/postgres.sh

work=$(mktemp -d "${TMPDIR:-/tmp}/callhippo-run-test.XXXXXX")
chmod 0755 "$work"   # a local cluster's owner (postgres) may have to enter it
server_url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
db="callhippo_run_test_$$"
port=$(( 20000 + RANDOM % 10000 ))
while port_in_use "$port"; do port=$((port + 1)); done
pid=''
# The server the test asks: the one scripts/run is given (it uses a DATABASE_URL as it is).
db_url="$(url_with_db "$server_url" "$db")"

admin() { psql "$(url_with_db "$db_url" postgres)" -X -q -t -A -v ON_ERROR_STOP=1 -c "$1" </dev/null; }

cleanup() {
    local rc=$?
    trap - EXIT
    # Its own process group (setsid): cargo, when the build is still running, goes too.
    [[ -z $pid ]] || kill -KILL -- "-$pid" 2>/dev/null || true
    admin "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
    # A local cluster scripts/run made for this test is stopped too.
    CALLHIPPO_RUN_DIR="$work/run" scripts/run --stop-db >/dev/null 2>&1 || true
    if [[ $rc -ne 0 ]]; then
        say "FAILED; scripts/run's output:"
        cat "$work/out" "$work/log" >&2 2>/dev/null || true
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT

fail() { say "FAIL: $*"; exit 1; }

say "scripts/run on 127.0.0.1:$port, database $db (missing), spool and run folder in $work"
LISTEN_ADDR="127.0.0.1:$port" SPOOL_DIR="$work/spool" CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}" \
    CALLHIPPO_RUN_DIR="$work/run" CALLHIPPO_NO_DOCKER=1 DATABASE_URL="$(url_with_db "$server_url" "$db")" \
    WEBHOOK_TOKEN='' RUST_LOG=info \
    setsid scripts/run >"$work/out" 2>"$work/log" </dev/null &
pid=$!

base="http://127.0.0.1:$port"
ready=0
for _ in $(seq 1 1800); do   # the build included: at most 30 minutes
    kill -0 "$pid" 2>/dev/null || fail "scripts/run exited early"
    if curl -sf -o /dev/null "$base/readyz"; then ready=1; break; fi
    sleep 1
done
[[ $ready -eq 1 ]] || fail "/readyz did not answer 200"
say "ready"

grep -q "using PostgreSQL at .*/$db (DATABASE_URL)" "$work/log" \
    || fail "scripts/run did not use the DATABASE_URL it was given"
[[ $(admin "SELECT count(*) FROM pg_database WHERE datname = '$db'") == 1 ]] \
    || fail "the database $db was not created"

url=$(grep -m1 -E '^http://[^ ]+/webhooks/callhippo\?token=[0-9a-f]{32}$' "$work/out") \
    || fail "no webhook URL with a generated token on stdout"
[[ $url == *"token=$(cat "$work/run/webhook-token")" ]] || fail "the printed token is not the kept one"
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
call() { printf '{"activityType":"call","callSid":"%s","status":"Completed","time":"%s"}' "$1" "$now"; }

answer=$(curl -s "$url" -H 'Content-Type: application/json' -d "$(call CA-run-1)")
[[ $answer == *'"status":"stored"'* ]] || fail "posting to the printed URL: $answer"
answer=$(curl -s -o /dev/null -w '%{http_code}' "${url%%\?*}?token=wrong" -d "$(call CA-run-x)")
[[ $answer == 401 ]] || fail "a wrong token answered $answer"
[[ $(admin "SELECT 1") == 1 ]]
stored=$(psql "$db_url" -X -q -t -A -c "SELECT count(*) FROM calls WHERE call_sid = 'CA-run-1'" </dev/null)
[[ $stored == 1 ]] || fail "the call is not in calls ($stored)"
say "a call posted to the printed URL is stored"

# The database turns read-only (as a demoted primary would): the next event is spooled.
admin "ALTER DATABASE \"$db\" SET default_transaction_read_only = on" >/dev/null
admin "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '$db'" >/dev/null
answer=$(curl -s "$url" -H 'Content-Type: application/json' -d "$(call CA-run-2)")
[[ $answer == *'"status":"queued"'* ]] || fail "with a read-only database: $answer"
kill -TERM "$pid"
for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
kill -0 "$pid" 2>/dev/null && fail "serve did not stop within 30 s of SIGTERM"
wait "$pid" || fail "serve exited with status $? after SIGTERM"
pid=''
last=$(tail -n 1 "$work/log")
[[ $last == *"stopped: 1 event still in the spool at $work/spool, written when the database answers"* ]] \
    || fail "the last line does not say what is left in the spool: $last"
say "SIGTERM with one event spooled says so"
admin "ALTER DATABASE \"$db\" RESET default_transaction_read_only" >/dev/null

if grep -q $'\x1b' "$work/log" "$work/out"; then
    fail "escape codes in the log written to a file"
fi
say "the log file is plain text"
echo "run-script: 4 passed, 0 failed"
