#!/usr/bin/env bash
# tests/pgbouncer.sh: Debian's PgBouncer in transaction mode in front of a PostgreSQL, with two
# server connections, for the pooler test (tests/api/pooler.rs). Installed with apt-get when
# missing (as root).
#
#   tests/pgbouncer.sh start DIR UPSTREAM_PORT   prints "PGBOUNCER_PORT=…"
#   tests/pgbouncer.sh stop DIR                  stops it and removes DIR
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SCRIPT=tests/pgbouncer.sh
# shellcheck source=scripts/lib/postgres.sh
. scripts/lib/postgres.sh

cmd=${1:?start or stop} PG_HOME=${2:?a folder}
BOUNCER=/usr/sbin/pgbouncer

ensure_pgbouncer() {
    [[ -x $BOUNCER ]] && return
    [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1 \
        || die "pgbouncer is not installed (apt-get install pgbouncer)"
    say "installing Debian's pgbouncer for the pooler test"
    export DEBIAN_FRONTEND=noninteractive
    { timeout 600 apt-get install -y -q pgbouncer </dev/null \
        || { timeout 300 apt-get update -q </dev/null \
            && timeout 600 apt-get install -y -q pgbouncer </dev/null; }; } \
        >"$PG_HOME/install.log" 2>&1 || { cat "$PG_HOME/install.log" >&2; die "could not install pgbouncer"; }
}

case $cmd in
    start)
        upstream=${3:?the upstream PostgreSQL port}
        mkdir -p "$PG_HOME"
        ensure_pgbouncer
        # PgBouncer refuses to run as root: it runs as the postgres system user then.
        choose_pg_user
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
        printf '"postgres" ""\n' >"$PG_HOME/users.txt"
        cat >"$PG_HOME/pgbouncer.ini" <<INI
[databases]
* = host=127.0.0.1 port=$upstream
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $PG_HOME/users.txt
pool_mode = transaction
default_pool_size = 2
max_db_connections = 2
max_client_conn = 200
logfile = $PG_HOME/pgbouncer.log
pidfile = $PG_HOME/pgbouncer.pid
INI
        chmod 0755 "$PG_HOME"
        if [[ -n $PG_USER ]]; then chown -R "$PG_USER:" "$PG_HOME"; fi
        pg_run "$BOUNCER" -d "$PG_HOME/pgbouncer.ini" >/dev/null
        for _ in $(seq 50); do
            if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
                printf 'PGBOUNCER_PORT=%s\n' "$port"
                exit 0
            fi
            sleep 0.1
        done
        cat "$PG_HOME/pgbouncer.log" >&2 || true
        die "pgbouncer did not listen on $port"
        ;;
    stop)
        if [[ -f $PG_HOME/pgbouncer.pid ]]; then
            kill "$(cat "$PG_HOME/pgbouncer.pid")" 2>/dev/null || true
            sleep 0.2
        fi
        rm -rf "$PG_HOME"
        ;;
    *) die "unknown command $cmd" ;;
esac
