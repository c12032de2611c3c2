#!/usr/bin/env bash
# Start or stop a throw-away PostgreSQL on 127.0.0.1 without systemd (installs it from apt if missing).
# usage: scripts/pg.sh start|stop     env: PGPORT (default 5433), PGROOT (default /tmp/tap-pg)
set -euo pipefail
PGPORT="${PGPORT:-5433}"; PGROOT="${PGROOT:-/tmp/tap-pg}"
cd /   # the postgres user may not be allowed into the caller's folder
if ! ls -d /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
fi
PGBIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case "${1:-}" in
  start)
    if [ ! -s "$PGROOT/data/PG_VERSION" ]; then
      mkdir -p "$PGROOT"; if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$PGROOT"; fi
      as_pg "$PGBIN/initdb" -D "$PGROOT/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    fi
    as_pg "$PGBIN/pg_ctl" -D "$PGROOT/data" -l "$PGROOT/server.log" -w \
      -o "-p $PGPORT -k $PGROOT -c listen_addresses=127.0.0.1" start >/dev/null
    psql -h 127.0.0.1 -p "$PGPORT" -U postgres -qAtc "SELECT 1 FROM pg_roles WHERE rolname='tap'" | grep -q 1 \
      || psql -h 127.0.0.1 -p "$PGPORT" -U postgres -qc "CREATE ROLE tap LOGIN PASSWORD 'tap'" -c "CREATE DATABASE tap OWNER tap"
    echo "postgres up on 127.0.0.1:$PGPORT" ;;
  stop)
    if [ -f "$PGROOT/data/postmaster.pid" ]; then as_pg "$PGBIN/pg_ctl" -D "$PGROOT/data" -m fast -w stop >/dev/null; fi
    echo "postgres stopped" ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
