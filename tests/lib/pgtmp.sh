#!/bin/bash
# pgtmp.sh: a throwaway PostgreSQL for tests.
#
#   pgtmp.sh start DIR   start a server whose files live under DIR; prints shell-evaluable lines
#                        PGHOST=<socket dir> PGPORT=<port> PGDATABASE=headscale PGUSER=postgres
#                        (eval "$(pgtmp.sh start DIR)", or split each line on the first '=')
#   pgtmp.sh stop DIR    stop it (-m immediate); safe to call twice or without a start
#   pgtmp.sh env DIR     print the lines of a running server again
#   pgtmp.sh restart DIR stop it as a crash would (-m immediate) and start it again on the same
#                        port and files (for tests of clients that must outlive a restart)
#
# Listens on a unix socket (in DIR) and on 127.0.0.1:PORT (a free port), trust auth, superuser
# "postgres", database "headscale". Works as root without a tty: initdb/pg_ctl run as the
# postgres user through runuser, because initdb refuses root. Every wait is bounded.
#
# When the postgres user cannot reach DIR (e.g. pytest's /tmp/pytest-of-root is mode 0700) or
# DIR is too long for a unix socket path (107 bytes), the server files go into a private
# /tmp/pgtmp.XXXXXX instead; DIR/pgtmp.root records where, and stop removes it (keeping the
# server log as DIR/postgres.log).
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
DBNAME=headscale
DBUSER=postgres
WAIT=30

die() { echo "pgtmp: $*" >&2; exit 1; }

# Runs a command as the postgres user when we are root, directly otherwise.
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# The folder that holds data/, sock/, port and postgres.log for DIR.
root_of() {
    local dir=$1
    if [ -f "$dir/pgtmp.root" ]; then
        cat "$dir/pgtmp.root"
    else
        echo "$dir/pg"
    fi
}

# True when the postgres user can create files in $1 and a socket path under it fits.
usable_root() {
    local root=$1
    [ $((${#root} + 20)) -lt 100 ] || return 1
    mkdir -p "$root" || return 1
    [ "$(id -u)" = 0 ] && chown postgres: "$root"
    as_pg test -w "$root" 2>/dev/null
}

pick_root() {
    local dir=$1 root
    root="$dir/pg"
    if usable_root "$root"; then
        echo "$root"
        return
    fi
    rmdir "$root" 2>/dev/null || true
    root=$(mktemp -d /tmp/pgtmp.XXXXXX)
    chmod 0755 "$root"
    [ "$(id -u)" = 0 ] && chown postgres: "$root"
    echo "$root" >"$dir/pgtmp.root"
    echo "$root"
}

# A TCP port nobody listens on right now (a race is possible; start retries on failure).
free_port() {
    local port used
    used=$(ss -Hltn 2>/dev/null | awk '{print $4}' | sed 's/.*://' || true)
    for _ in $(seq 1 200); do
        port=$((20000 + RANDOM % 40000))
        if ! grep -qx "$port" <<<"$used"; then
            echo "$port"
            return
        fi
    done
    die "no free port found"
}

is_running() {
    local root=$1
    [ -f "$root/data/postmaster.pid" ] &&
        as_pg "$PGBIN/pg_ctl" -D "$root/data" status >/dev/null 2>&1
}

print_env() {
    local root=$1
    printf 'PGHOST=%q\n' "$root/sock"
    printf 'PGPORT=%q\n' "$(cat "$root/port")"
    printf 'PGDATABASE=%q\n' "$DBNAME"
    printf 'PGUSER=%q\n' "$DBUSER"
}

init_cluster() {
    local root=$1
    [ -f "$root/data/PG_VERSION" ] && return 0
    as_pg mkdir -p "$root/data" "$root/sock"
    as_pg "$PGBIN/initdb" -D "$root/data" -A trust -U "$DBUSER" -E UTF8 --no-sync \
        </dev/null >"$root/initdb.log" 2>&1 ||
        { cat "$root/initdb.log" >&2; die "initdb failed"; }
}

# fsync and friends are off: the data is thrown away, and tests should not wait on disks.
start_server() {
    local root=$1 port=$2
    as_pg "$PGBIN/pg_ctl" -D "$root/data" -l "$root/postgres.log" -w -t "$WAIT" \
        -o "-p $port -k $root/sock -c listen_addresses=127.0.0.1 -c fsync=off \
-c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start </dev/null >/dev/null 2>&1
}

cmd_start() {
    local dir=$1 root port
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    root=$(root_of "$dir")
    [ -d "$root" ] || root=$(pick_root "$dir")
    if ! is_running "$root"; then
        [ -f "$root/data/PG_VERSION" ] || usable_root "$root" || root=$(pick_root "$dir")
        init_cluster "$root"
        for attempt in 1 2 3 4 5; do
            port=$(free_port)
            if start_server "$root" "$port"; then
                echo "$port" >"$root/port"
                break
            fi
            [ "$attempt" = 5 ] && { tail -n 20 "$root/postgres.log" >&2 || true; die "pg_ctl start failed"; }
        done
    fi
    if ! "$PGBIN/psql" -h "$root/sock" -p "$(cat "$root/port")" -U "$DBUSER" -d postgres -Atq \
        -c "SELECT 1 FROM pg_database WHERE datname = '$DBNAME'" </dev/null | grep -q 1; then
        "$PGBIN/createdb" -h "$root/sock" -p "$(cat "$root/port")" -U "$DBUSER" "$DBNAME" </dev/null
    fi
    print_env "$root"
}

cmd_stop() {
    local dir=$1 root pid
    [ -d "$dir" ] || return 0
    root=$(root_of "$dir")
    if [ -f "$root/data/postmaster.pid" ]; then
        if ! as_pg "$PGBIN/pg_ctl" -D "$root/data" -m immediate -w -t "$WAIT" stop \
            </dev/null >/dev/null 2>&1; then
            # pg_ctl gave up: the postmaster we started is stuck, so end it by its own pid.
            pid=$(head -n 1 "$root/data/postmaster.pid" 2>/dev/null || true)
            if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
                kill -KILL "$pid" 2>/dev/null || true
            fi
            rm -f "$root/data/postmaster.pid"
        fi
    fi
    if [ -f "$dir/pgtmp.root" ]; then
        cp "$root/postgres.log" "$dir/postgres.log" 2>/dev/null || true
        case "$root" in /tmp/pgtmp.*) rm -rf "$root" ;; esac
        rm -f "$dir/pgtmp.root"
    fi
}

cmd_restart() {
    local root
    root=$(root_of "$(cd "$1" && pwd)")
    is_running "$root" || die "not running"
    as_pg "$PGBIN/pg_ctl" -D "$root/data" -m immediate -w -t "$WAIT" stop </dev/null >/dev/null 2>&1 ||
        die "pg_ctl stop failed"
    start_server "$root" "$(cat "$root/port")" || { tail -n 20 "$root/postgres.log" >&2 || true; die "pg_ctl start failed"; }
    print_env "$root"
}

cmd_env() {
    local root
    root=$(root_of "$(cd "$1" && pwd)")
    is_running "$root" || die "not running"
    print_env "$root"
}

[ $# -eq 2 ] || die "usage: pgtmp.sh start|stop|restart|env DIR"
case "$1" in
start) cmd_start "$2" ;;
stop) cmd_stop "$2" ;;
restart) cmd_restart "$2" ;;
env) cmd_env "$2" ;;
*) die "usage: pgtmp.sh start|stop|restart|env DIR" ;;
esac
