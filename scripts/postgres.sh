#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server for the tests, from Debian's
# packages (installed if missing), on 127.0.0.1:${PGPORT:-55432}, with its
# data in ${PGDATA_DIR:-/tmp/linegate-pg}. Prints the DSN to use as
# LINEGATE_TEST_POSTGRES. Run as root or as a user who can run postgres.
#
#   export LINEGATE_TEST_POSTGRES=$(scripts/postgres.sh start)
#   scripts/postgres.sh stop
set -euo pipefail
port=${PGPORT:-55432}
dir=${PGDATA_DIR:-/tmp/linegate-pg}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)

as_pg() {
	if [ "$(id -u)" = 0 ]; then
		su postgres -s /bin/sh -c "$*"
	else
		sh -c "$*"
	fi
}

case "${1:-start}" in
start)
	if [ -z "$bin" ]; then
		apt-get update -qq >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
		bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
	fi
	if [ ! -f "$dir/PG_VERSION" ]; then
		mkdir -p "$dir"
		[ "$(id -u)" = 0 ] && chown postgres "$dir"
		as_pg "$bin/initdb -D $dir -U postgres --auth=trust -E UTF8 >/dev/null"
	fi
	# Durable commits as in production: fsync and synchronous_commit stay on.
	if ! as_pg "$bin/pg_ctl -D $dir status" >/dev/null 2>&1; then
		as_pg "$bin/pg_ctl -D $dir -l $dir/server.log -w -o '-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir -c max_connections=300' start" >&2
	fi
	as_pg "$bin/psql -h 127.0.0.1 -p $port -U postgres -qtc \"SELECT 1 FROM pg_database WHERE datname = 'linegate'\"" | grep -q 1 ||
		as_pg "$bin/createdb -h 127.0.0.1 -p $port -U postgres linegate"
	echo "postgres://postgres@127.0.0.1:$port/linegate?sslmode=disable"
	;;
stop)
	as_pg "$bin/pg_ctl -D $dir -m fast -w stop" >&2
	;;
*)
	echo "usage: $0 start|stop" >&2
	exit 2
	;;
esac
