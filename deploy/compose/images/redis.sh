#!/bin/sh
# The Redis image's entrypoint: a config holding the password from
# /run/secrets/redis_password (never on the command line), no persistence;
# then redis-server as uid 999, in the foreground as PID 1.
# `faxi-entrypoint healthcheck`: whether it answers PING.
set -eu
if [ "${1:-}" = healthcheck ]; then
  printf 'AUTH "%s"\r\nPING\r\nQUIT\r\n' "$(cat /run/secrets/redis_password)" |
    nc -w 2 127.0.0.1 6379 | grep -q PONG
  exit
fi
umask 077
conf=/tmp/redis.conf
{
  echo "bind 0.0.0.0"
  echo "port 6379"
  echo "save \"\""
  echo "appendonly no"
  printf 'requirepass "%s"\n' "$(cat /run/secrets/redis_password)"
} >"$conf"
chown 999:999 "$conf"
exec su -s /bin/sh -c 'exec redis-server "$0"' -- redis "$conf"
