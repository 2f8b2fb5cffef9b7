#!/usr/bin/env bash
# Makes sure the local Redis (6379) and PostgreSQL (5432) answer; starts the machine's own if they do not.
set -euo pipefail

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }

if ! redis_up; then
  echo "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
if ! pg_up; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
fi
for _ in $(seq 1 60); do
  if redis_up && pg_up; then echo "Redis and PostgreSQL are up"; exit 0; fi
  sleep 0.5
done
redis_up || echo "Redis does not answer on 127.0.0.1:6379" >&2
pg_up || echo "PostgreSQL does not answer on 127.0.0.1:5432" >&2
exit 1
