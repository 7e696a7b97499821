#!/bin/sh
# The PostgreSQL image's entrypoint: on an empty data dir, initdb and a
# `faxi` role (its password from /run/secrets/pg_password) owning database
# `faxi`; then the server, as user postgres (uid 999), in the foreground
# as PID 1, so that `docker kill` kills the database itself.
# `faxi-entrypoint healthcheck`: whether it accepts connections (Compose
# starts the nodes once it does).
set -eu
PATH=$PGBIN:$PATH
if [ "${1:-}" = healthcheck ]; then
  exec pg_isready -q -h 127.0.0.1 -p 5432
fi
data=/var/lib/postgresql/data
mkdir -p "$data"
chown 999:999 "$data"
chmod 700 "$data"
as_postgres() { su -s /bin/sh -c 'exec "$@"' -- postgres sh "$@"; }
# .faxi-ready marks a finished set-up; a data dir without it (a first start
# killed half-way) is made again.
if [ ! -e "$data/.faxi-ready" ]; then
  rm -rf "${data:?}"/* "$data"/.[!.]* 2>/dev/null || true
  pw=$(cat /run/secrets/pg_password)
  as_postgres initdb --no-sync -D "$data" -U postgres -E UTF8 --locale=C \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  echo "host all all 0.0.0.0/0 scram-sha-256" >>"$data/pg_hba.conf"
  printf "CREATE ROLE faxi LOGIN PASSWORD '%s';\nCREATE DATABASE faxi OWNER faxi;\n" \
    "$(printf %s "$pw" | sed "s/'/''/g")" |
    as_postgres postgres --single -D "$data" postgres >/dev/null 2>&1 || {
    # Its own output would echo the statement, password and all.
    echo "postgres: creating role and database faxi failed" >&2
    exit 1
  }
  : >"$data/.faxi-ready"
  echo "postgres: initialised $data (role and database faxi)"
fi
exec su -s /bin/sh -c 'exec "$@"' -- postgres sh postgres -D "$data" \
  -c listen_addresses='*' -c unix_socket_directories=/tmp -c jit=off \
  -c shared_buffers=32MB -c max_connections=50
