# Finding, installing and running PostgreSQL, for scripts/test and scripts/run.
# Sourced, not run. The including script sets SCRIPT (its name, for messages) first.

say() { printf '%s: %s\n' "$SCRIPT" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# The URL with its password replaced by ***, for messages.
redact() { printf '%s' "$1" | sed -E 's#^([a-zA-Z]+://[^:/@]*):[^@/]*@#\1:***@#'; }

# Split a postgres URL into URL_USER URL_HOST URL_PORT URL_DB.
parse_url() {
    local re='^(postgres|postgresql)://(([^@/]*)@)?(\[[^]/]*\]|[^:/?]*)(:([0-9]*))?(/([^?]*))?(\?.*)?$'
    if [[ $1 =~ $re ]]; then
        URL_USER="${BASH_REMATCH[3]%%:*}"
        URL_HOST="${BASH_REMATCH[4]}"
        URL_PORT="${BASH_REMATCH[6]:-5432}"
        URL_DB="${BASH_REMATCH[8]}"
    else
        die "DATABASE_URL is not a postgres://… URL: $(redact "$1")"
    fi
    URL_HOST="${URL_HOST:-127.0.0.1}"
    URL_DB="${URL_DB:-${URL_USER:-postgres}}"
}

# The same URL naming another database.
url_with_db() {
    local url=$1 db=$2 query=''
    [[ $url == *\?* ]] && query="?${url#*\?}"
    url="${url%%\?*}"
    local re='^([a-z]+://[^/]*)(/.*)?$'
    [[ $url =~ $re ]] || die "DATABASE_URL is not a postgres://… URL: $(redact "$1")"
    printf '%s/%s%s' "${BASH_REMATCH[1]}" "$db" "$query"
}

# Does a PostgreSQL answer at this URL (and accept our login)? Sets PROBE_ERR.
pg_answers() {
    local url=$1
    PROBE_ERR=''
    if command -v psql >/dev/null 2>&1; then
        if PROBE_ERR=$(PGCONNECT_TIMEOUT=3 psql "$url" -X -q -t -A -w -c 'select 1' 2>&1 </dev/null); then
            return 0
        fi
        return 1
    elif command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -t 3 -d "$url"
    else
        # No client tools: whether something listens is all that can be told. In a subshell,
        # so that the caller's URL_* stay as they were.
        local where
        where=$(parse_url "$url" && printf '%s/%s' "$URL_HOST" "$URL_PORT")
        if timeout 3 bash -c "exec 3<>/dev/tcp/$where" 2>/dev/null; then
            return 0
        fi
        PROBE_ERR="nothing answers at ${where/\//:} (and neither psql nor pg_isready is installed)"
        return 1
    fi
}

# Does the server of this URL answer, whether or not its database exists yet? (The service
# creates a missing database itself.)
pg_server_answers() {
    local url=$1
    pg_answers "$url" && return 0
    case $PROBE_ERR in
        *"does not exist"*) pg_answers "$(url_with_db "$url" postgres)" ;;
        *) return 1 ;;
    esac
}

# Is something listening on 127.0.0.1:$1 ?
port_in_use() {
    local port=$1
    if command -v ss >/dev/null 2>&1 && ss -Htln "sport = :$port" 2>/dev/null | grep -q .; then
        return 0
    fi
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

# `docker compose` or `docker-compose` into COMPOSE when a Docker engine answers; else empty.
find_compose() {
    COMPOSE=()
    [[ ${CALLHIPPO_NO_DOCKER:-${CALLHIPPO_TEST_NO_DOCKER:-0}} != 1 ]] || return 1
    command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1 || return 1
    if docker compose version >/dev/null 2>&1; then
        COMPOSE=(docker compose)
    elif command -v docker-compose >/dev/null 2>&1; then
        COMPOSE=(docker-compose)
    else
        say "a Docker engine answers but docker compose is not installed; skipping Docker"
        return 1
    fi
}

# Starts the compose service `db`, published on 127.0.0.1:$1, and waits for it.
# Sets DATABASE_URL to it.
start_compose_db() {
    local db_port=$1
    export CALLHIPPO_DB_PORT="$db_port"
    local files=(-f docker-compose.yml -f docker-compose.test.yml)
    say "starting the compose service db with ${COMPOSE[*]} (host port $db_port)"
    # The file needs a WEBHOOK_TOKEN to resolve, even for the db service alone: one for
    # compose only, never exported to what runs after.
    local wait=()
    [[ ${COMPOSE[*]} == 'docker compose' ]] && wait=(--wait)
    WEBHOOK_TOKEN="${WEBHOOK_TOKEN:-unused-by-the-db-service}" \
        "${COMPOSE[@]}" "${files[@]}" up -d "${wait[@]}" db
    DATABASE_URL="postgres://postgres:postgres@127.0.0.1:${db_port}/callhippo"
    if command -v psql >/dev/null 2>&1 || command -v pg_isready >/dev/null 2>&1; then
        for _ in $(seq 1 60); do
            pg_answers "$DATABASE_URL" && break
            sleep 1
        done
        pg_answers "$DATABASE_URL" || die "the compose service db did not answer at $(redact "$DATABASE_URL"): ${PROBE_ERR}"
    else
        say "no psql/pg_isready here to check the database; relying on the service's healthcheck"
    fi
}

# A folder holding both initdb and pg_ctl: next to the ones on PATH, else the highest
# /usr/lib/postgresql/*/bin.
find_pg_bindir() {
    local d p
    for p in initdb pg_ctl; do
        if command -v "$p" >/dev/null 2>&1; then
            d=$(dirname "$(readlink -f "$(command -v "$p")")")
            if [[ -x $d/initdb && -x $d/pg_ctl ]]; then
                printf '%s\n' "$d"
                return 0
            fi
        fi
    done
    for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
        if [[ -x $d/initdb && -x $d/pg_ctl ]]; then
            printf '%s\n' "$d"
            return 0
        fi
    done
    return 1
}

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        if [[ -t 0 ]]; then sudo "$@"; else sudo -n "$@"; fi
    else
        return 1
    fi
}

# PG_BIN: the server binaries, installing Debian's postgresql package when there are none.
ensure_pg_binaries() {
    if PG_BIN=$(find_pg_bindir); then
        return 0
    fi
    say "no local PostgreSQL server binaries (initdb, pg_ctl); installing Debian's postgresql package"
    command -v apt-get >/dev/null 2>&1 \
        || die "no PostgreSQL answers, no Docker engine, no initdb/pg_ctl and no apt-get: install PostgreSQL or set DATABASE_URL"
    if [[ $(id -u) -ne 0 ]] && ! command -v sudo >/dev/null 2>&1; then
        die "installing postgresql needs root and sudo is missing: run 'apt-get install postgresql' as root, or set DATABASE_URL to a running PostgreSQL"
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 \
        || die "'apt-get update' failed (as root or with sudo): install postgresql yourself, or set DATABASE_URL"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 \
        || die "'apt-get install postgresql' failed: install it yourself, or set DATABASE_URL"
    PG_BIN=$(find_pg_bindir) || die "postgresql was installed but initdb/pg_ctl were not found under /usr/lib/postgresql/*/bin"
}

# PG_USER: who owns a cluster made here. initdb refuses to run as root: then the cluster
# belongs to the postgres system user, created when missing.
choose_pg_user() {
    PG_USER=''
    if [[ $(id -u) -eq 0 ]]; then
        PG_USER=postgres
        if ! id -u "$PG_USER" >/dev/null 2>&1; then
            say "creating the system user $PG_USER"
            useradd --system --user-group --no-create-home --home-dir /var/lib/postgresql \
                --shell /bin/sh "$PG_USER" || die "could not create the system user $PG_USER"
        fi
    fi
}

# Runs a PostgreSQL binary as the cluster's owner, from inside folder $PG_HOME (the owner
# may not be allowed into the current folder).
pg_run() {
    if [[ -n $PG_USER ]]; then
        if command -v runuser >/dev/null 2>&1; then
            (cd "$PG_HOME" && runuser -u "$PG_USER" -- "$@")
        else
            local cmd
            cmd=$(printf '%q ' "$@")
            (cd "$PG_HOME" && su "$PG_USER" -s /bin/sh -c "$cmd")
        fi
    else
        (cd "$PG_HOME" && "$@")
    fi
}

# initdb of a trust-auth cluster with superuser postgres in $1 (PG_HOME must hold it).
make_cluster() {
    local data=$1
    if ! pg_run "$PG_BIN/initdb" -D "$data" --auth=trust -U postgres --encoding=UTF8 --no-locale \
        >"$PG_HOME/initdb.log" 2>&1; then
        cat "$PG_HOME/initdb.log" >&2
        die "initdb failed"
    fi
}

# Starts the cluster in $1 on 127.0.0.1, on the first free port of the ones after $2, with
# the extra server options $3. Sets PG_PORT. TCP only: no socket path to keep short.
start_cluster() {
    local data=$1 first=$2 options=$3 p
    PG_PORT=''
    for p in "$first" $(seq 55432 55531); do
        port_in_use "$p" && continue
        # A log of this attempt alone: an older "address in use" must not explain this one.
        [[ -f $PG_HOME/postgres.log ]] && cat "$PG_HOME/postgres.log" >>"$PG_HOME/postgres.old.log"
        rm -f "$PG_HOME/postgres.log"
        if pg_run "$PG_BIN/pg_ctl" -D "$data" -l "$PG_HOME/postgres.log" -w -t 60 \
            -o "-h 127.0.0.1 -p $p -c unix_socket_directories='' $options" \
            start >/dev/null 2>&1; then
            PG_PORT=$p
            return 0
        fi
        # Most likely someone took the port meanwhile; make sure nothing is left running.
        pg_run "$PG_BIN/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
        if ! grep -qiE 'could not (bind|create listen)|address already in use' "$PG_HOME/postgres.log" 2>/dev/null; then
            tail -n 30 "$PG_HOME/postgres.log" >&2 || true
            die "the PostgreSQL cluster in $data did not start (log above)"
        fi
    done
    die "found no free port for the PostgreSQL cluster in $data"
}

# Creates database $2 on the cluster at URL $1 when it is missing.
create_database() {
    local url=$1 db=$2
    [[ $db == postgres || $db == template1 ]] && return 0
    local admin psql
    admin=$(url_with_db "$url" postgres)
    psql=$(command -v psql || printf '%s' "$PG_BIN/psql")
    if [[ $("$psql" "$admin" -X -q -t -A -c "select 1 from pg_database where datname = '${db//\'/\'\'}'" </dev/null) != 1 ]]; then
        "$psql" "$admin" -X -q -c "create database \"${db//\"/\"\"}\"" </dev/null >/dev/null \
            || die "could not create the database $db"
    fi
}
