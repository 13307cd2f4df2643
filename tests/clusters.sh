#!/usr/bin/env bash
# tests/clusters.sh: a primary and its streaming standby (synchronous: a commit waits for the
# standby), made from the local PostgreSQL binaries in a folder of the caller's, for the
# failover test (tests/api/failover.rs).
#
#   tests/clusters.sh start DIR          prints "PRIMARY_PORT=… STANDBY_PORT=…"
#   tests/clusters.sh stop-primary DIR   stops the primary at once (as a crash would)
#   tests/clusters.sh promote DIR        promotes the standby
#   tests/clusters.sh stop DIR           stops both and removes DIR
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SCRIPT=tests/clusters.sh
# shellcheck source=scripts/lib/postgres.sh
. scripts/lib/postgres.sh

cmd=${1:?start, stop-primary, promote or stop} PG_HOME=${2:?a folder}
ensure_pg_binaries
choose_pg_user

case $cmd in
    start)
        mkdir -p "$PG_HOME"
        chmod 0755 "$PG_HOME"
        if [[ -n $PG_USER ]]; then chown "$PG_USER:" "$PG_HOME"; fi
        make_cluster "$PG_HOME/primary"
        start_cluster "$PG_HOME/primary" 56432 "-c fsync=off -c synchronous_standby_names=*"
        primary=$PG_PORT
        pg_run "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$primary" -U postgres \
            -D "$PG_HOME/standby" -R -X stream >"$PG_HOME/basebackup.log" 2>&1 \
            || { cat "$PG_HOME/basebackup.log" >&2; die "pg_basebackup failed"; }
        start_cluster "$PG_HOME/standby" $((primary + 1)) "-c fsync=off"
        printf 'PRIMARY_PORT=%s STANDBY_PORT=%s\n' "$primary" "$PG_PORT"
        ;;
    stop-primary)
        pg_run "$PG_BIN/pg_ctl" -D "$PG_HOME/primary" -m immediate -w stop >/dev/null
        ;;
    promote)
        pg_run "$PG_BIN/pg_ctl" -D "$PG_HOME/standby" -w promote >/dev/null
        ;;
    stop)
        for d in primary standby; do
            [[ -d $PG_HOME/$d ]] && pg_run "$PG_BIN/pg_ctl" -D "$PG_HOME/$d" -m immediate -w stop >/dev/null 2>&1 || true
        done
        rm -rf "$PG_HOME"
        ;;
    *) die "unknown command $cmd" ;;
esac
