# Helpers shared by bench/run and bench/drill (sourced, not run).

# Runs a command as the postgres user when we are root (initdb and pg_ctl refuse root).
as_pg() { if ((EUID == 0)); then runuser -u postgres -- "$@"; else "$@"; fi; }

# A TCP port on 127.0.0.1 that nothing listens on. It is chosen below the kernel's range of
# local ports for outgoing connections (ip_local_port_range, 32768 and up by default): a
# port in that range can be taken by an outgoing connection (the load generator's, a
# PostgreSQL client's) between this check and the server's bind.
free_port() {
    local low=32768 lowest=10000 p _
    read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
    ((low > lowest + 1000)) || { lowest=1024; ((low > lowest + 1000)) || low=65536; }
    for _ in $(seq 1 200); do
        p=$((lowest + RANDOM % (low - lowest)))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
    done
    return 1
}

# field LINE NAME: the value of NAME=value in a `RESULT …` line (the last one if repeated).
field() { sed -n "s/.*[ ]$2=\([^ ]*\).*/\1/p" <<<" $1" | tail -n 1; }
