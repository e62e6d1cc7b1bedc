#!/bin/bash
# Initialises PGDATA on the first start, then runs the server as postgres,
# the way the official postgres image's entrypoint does (gosu, a password
# read through process substitution, a temporary server for setup).
set -Eeo pipefail
if [ "$1" = postgres ] && [ "$(id -u)" = 0 ]; then
	mkdir -p "$PGDATA"
	chown postgres:postgres "$PGDATA"
	chmod 700 "$PGDATA"
	exec gosu postgres "$BASH_SOURCE" "$@"
fi
if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
	if [ -z "$POSTGRES_PASSWORD" ]; then
		echo "error: POSTGRES_PASSWORD is not set (docker run -e POSTGRES_PASSWORD=...)" >&2
		exit 1
	fi
	initdb --username=postgres --auth-local=trust --auth-host=scram-sha-256 \
		--pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD")
	pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
	psql -v ON_ERROR_STOP=1 --username postgres --no-password -c 'CREATE DATABASE app'
	pg_ctl -D "$PGDATA" -m fast -w stop
	echo 'PostgreSQL init process complete; ready for start up.'
fi
exec "$@"
