#!/usr/bin/env bash
# pg.sh — a throwaway PostgreSQL 15 cluster for kassa's tests and benchmarks.
#
#   tests/harness/pg.sh start DIR   creates DIR, initialises a cluster in it, starts postgres on
#                                   127.0.0.1 at a free port, creates database "kassa" and prints
#                                   only its URL on stdout: postgres://kassa@127.0.0.1:PORT/kassa
#   tests/harness/pg.sh stop DIR    stops that cluster at once and removes DIR
#
# Authentication is "trust" on 127.0.0.1 only (throwaway data). fsync stays on: benchmarks
# measure durable commits. PostgreSQL refuses to run as root, so as root the cluster runs as the
# unprivileged system user kassa-pg (created on first use) and DIR belongs to it. Progress and
# errors go to stderr; the server's log is DIR/postgres.log.
set -euo pipefail

PGBIN=${KASSA_PGBIN:-/usr/lib/postgresql/15/bin}
OS_USER=kassa-pg
DB_USER=kassa
DB_NAME=kassa
MARK=.kassa-pg-harness
START_TIMEOUT_S=30
PORT_TRIES_MAX=20

die() {
  echo "pg.sh: $*" >&2
  exit 1
}

usage() {
  echo "usage: $0 start DIR | stop DIR" >&2
  exit 2
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# Runs a command as the cluster's owner, from a directory that owner can enter.
as_owner() {
  if is_root; then
    (cd / && runuser -u "$OS_USER" -- "$@")
  else
    (cd / && "$@")
  fi
}

# Creates the unprivileged system user, idempotently (two starts at once may race on useradd).
ensure_os_user() {
  local i
  for i in 1 2 3 4 5; do
    id -u "$OS_USER" >/dev/null 2>&1 && return 0
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
      "$OS_USER" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  id -u "$OS_USER" >/dev/null 2>&1 || die "cannot create system user $OS_USER"
}

# As root, lets kassa-pg reach DIR: every ancestor it cannot search gets o+x (search only, no
# listing), e.g. the 0700 directories mktemp -d makes.
open_path_for_owner() {
  local dir=$1 path="" part
  local IFS=/
  for part in $dir; do
    [ -z "$part" ] && continue
    path="$path/$part"
    [ "$path" = "$dir" ] && break
    if ! runuser -u "$OS_USER" -- test -x "$path" 2>/dev/null; then
      echo "pg.sh: allowing $OS_USER to traverse $path (chmod o+x)" >&2
      chmod o+x "$path"
    fi
  done
}

# A TCP port on 127.0.0.1 that nothing listens on right now (a race remains: start retries).
pick_port() {
  local port i
  for i in $(seq 1 100); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  die "no free TCP port found on 127.0.0.1"
}

cmd_start() {
  local dir=$1
  [ -x "$PGBIN/initdb" ] || die "PostgreSQL 15 binaries not found in $PGBIN (run scripts/install-deps.sh)"
  if [ -e "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
    die "$dir exists and is not empty"
  fi
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd -P)
  if is_root; then
    ensure_os_user
    chown "$OS_USER:" "$dir"
    open_path_for_owner "$dir"
  fi
  chmod 700 "$dir"
  echo "created by tests/harness/pg.sh" >"$dir/$MARK"

  as_owner "$PGBIN/initdb" -D "$dir/data" -U "$DB_USER" --auth=trust --encoding=UTF8 \
    --no-locale >"$dir/initdb.log" 2>&1 || die "initdb failed; see $dir/initdb.log"
  cat >>"$dir/data/postgresql.conf" <<EOF

# tests/harness/pg.sh
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
fsync = on
synchronous_commit = on
full_page_writes = on
shared_buffers = 256MB
max_connections = 200
logging_collector = off
EOF

  local port="" try ok=0
  for try in $(seq 1 "$PORT_TRIES_MAX"); do
    port=$(pick_port)
    if as_owner "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -o "-p $port" \
      -w -t "$START_TIMEOUT_S" start >/dev/null 2>&1; then
      ok=1
      break
    fi
    # Lost the race for the port: try another. Anything else is fatal.
    if ! grep -q "could not bind\|Address already in use" "$dir/postgres.log" 2>/dev/null; then
      tail -n 20 "$dir/postgres.log" >&2 2>/dev/null || true
      die "postgres did not start; see $dir/postgres.log"
    fi
  done
  [ "$ok" -eq 1 ] || die "postgres did not start after $PORT_TRIES_MAX ports; see $dir/postgres.log"
  echo "port=$port" >>"$dir/$MARK"

  local deadline=$((SECONDS + START_TIMEOUT_S))
  until "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U "$DB_USER" -d postgres -t 2; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 20 "$dir/postgres.log" >&2 2>/dev/null || true
      die "postgres on 127.0.0.1:$port not ready after ${START_TIMEOUT_S}s; see $dir/postgres.log"
    fi
    sleep 0.1
  done
  "$PGBIN/createdb" -h 127.0.0.1 -p "$port" -U "$DB_USER" "$DB_NAME" >&2 ||
    die "createdb $DB_NAME failed"
  echo "postgres://$DB_USER@127.0.0.1:$port/$DB_NAME"
}

cmd_stop() {
  local dir=$1
  [ -d "$dir" ] || die "$dir does not exist"
  [ -f "$dir/$MARK" ] || die "$dir was not made by pg.sh start; not touching it"
  local pidfile="$dir/data/postmaster.pid"
  if [ -f "$pidfile" ]; then
    local pid
    pid=$(head -n 1 "$pidfile")
    if ! as_owner "$PGBIN/pg_ctl" -D "$dir/data" -m immediate -w -t "$START_TIMEOUT_S" stop \
      >/dev/null 2>&1; then
      # pg_ctl could not stop it: kill that one postmaster by its id, if it is still ours.
      if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] &&
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$dir/data"; then
        kill -KILL "$pid" 2>/dev/null || true
      fi
    fi
  fi
  rm -rf "$dir"
}

[ $# -eq 2 ] || usage
case $1 in
start) cmd_start "$2" ;;
stop) cmd_stop "$2" ;;
*) usage ;;
esac
