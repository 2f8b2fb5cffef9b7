#!/usr/bin/env bash
# The whole system locally without Docker: Node (22 or 24; Node 24 is installed from npm when older) and a
# local Redis and PostgreSQL (started by ensure-services.sh if they do not answer). Installs, builds,
# migrates, then runs every service as a background process (outbox-dispatcher, audit-ingestor,
# revocation-consumer, policy-invalidator, observers) and the traffic generator playing every producer,
# shows a compact live status per service every 5 s (ready, events/s, lag, pending, dead letters) and an
# end-to-end summary at the end, and stops them all on Ctrl-C.
#
#   bash scripts/demo.sh                        # until Ctrl-C
#   DEMO_SECONDS=60 bash scripts/demo.sh        # stop by itself after 60 s (exit 0 if all went well)
#   DEMO_TAMPER=all bash scripts/demo.sh        # the traffic generator also forges, drops, alters and
#                                               # deletes events (--tamper): watch dead letters and
#                                               # tamper alerts appear
#
# Settings (environment): DATABASE_URL, REDIS_URL, STREAMS_HMAC_KEY / AUDIT_HMAC_KEY (hex, >= 32 bytes;
# random dev keys are generated when unset), CARACAL_KEY_PREFIX (Redis key prefix, default none), ports
# INGESTOR_PORT 9090, DISPATCHER_PORT 9091, TRAFFIC_PORT 9092, REVOCATION_PORT 9093, POLICY_PORT 9094,
# OBSERVERS_PORT 9095; TRAFFIC_AUDIT_RATE 50, TRAFFIC_OUTBOX_RATE 6, DEMO_TAMPER (kinds, default none),
# DEMO_DIR (logs and replay dir; default a new /tmp/caracal-demo.*), DEMO_SKIP_INSTALL=1 / DEMO_SKIP_BUILD=1
# to rerun quickly. The observers' SIEM export writes OCSF NDJSON files to $DEMO_DIR/siem (SIEM_FILE_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO_SECONDS="${DEMO_SECONDS:-0}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
export CARACAL_KEY_PREFIX="${CARACAL_KEY_PREFIX:-}"
export TURBO_TELEMETRY_DISABLED=1 DO_NOT_TRACK=1
DISPATCHER_PORT="${DISPATCHER_PORT:-9091}"
INGESTOR_PORT="${INGESTOR_PORT:-9090}"
TRAFFIC_PORT="${TRAFFIC_PORT:-9092}"
REVOCATION_PORT="${REVOCATION_PORT:-9093}"
POLICY_PORT="${POLICY_PORT:-9094}"
OBSERVERS_PORT="${OBSERVERS_PORT:-9095}"

say() { printf '\n==> %s\n' "$*"; }

if ! [[ "$DEMO_SECONDS" =~ ^[0-9]+$ ]]; then echo "DEMO_SECONDS must be a whole number of seconds" >&2; exit 2; fi
# Node 22 or 24 (installs Node 24 from the npm registry when the machine's is older).
# shellcheck source=use-node.sh
source scripts/use-node.sh

if ! command -v pnpm >/dev/null 2>&1 || ! pnpm --version 2>/dev/null | grep -q '^10\.'; then
  say "installing pnpm 10"
  npm install -g pnpm@10.34.8
fi

if [ "${DEMO_SKIP_INSTALL:-0}" != "1" ]; then
  say "pnpm install --frozen-lockfile"
  pnpm install --frozen-lockfile
fi

say "Redis and PostgreSQL"
bash scripts/ensure-services.sh

if [ "${DEMO_SKIP_BUILD:-0}" != "1" ]; then
  say "pnpm build"
  pnpm build
fi

say "migrations"
if [ "${DEMO_SKIP_BUILD:-0}" = "1" ]; then node packages/db/dist/migrate.js; else pnpm db:migrate; fi

# Dev-safe keys: random per run unless given. They only live in this shell's environment; never printed.
# Entries an earlier run left unconsumed carry that run's signatures: this run dead-letters them
# (`signature_invalid`), which the summary shows as audit.dlq. Set both keys to keep them across runs.
random_hex() { node -e 'process.stdout.write(require("node:crypto").randomBytes(32).toString("hex"))'; }
export STREAMS_HMAC_KEY="${STREAMS_HMAC_KEY:-$(random_hex)}"
export AUDIT_HMAC_KEY="${AUDIT_HMAC_KEY:-$(random_hex)}"
export CARACAL_MODE="${CARACAL_MODE:-stable}"

DEMO_DIR="${DEMO_DIR:-$(mktemp -d /tmp/caracal-demo.XXXXXX)}"
mkdir -p "$DEMO_DIR/replay"
export AUDIT_REPLAY_DIR="$DEMO_DIR/replay"

names=()
pids=()
stopping=0

stop_all() {
  [ "$stopping" = 1 ] && return
  stopping=1
  if [ "${#pids[@]}" -gt 0 ]; then
    say "stopping"
    # Newest first: the producer flushes its last audit events while the ingestor and dispatcher still run.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
      kill -TERM "${pids[$i]}" 2>/dev/null || continue
      for _ in $(seq 1 150); do
        kill -0 "${pids[$i]}" 2>/dev/null || break
        sleep 0.1
      done
      if kill -0 "${pids[$i]}" 2>/dev/null; then
        echo "${names[$i]} did not stop within 15 s: SIGKILL" >&2
        kill -KILL "${pids[$i]}" 2>/dev/null || true
      fi
      wait "${pids[$i]}" 2>/dev/null && echo "${names[$i]} stopped" || echo "${names[$i]} stopped with status $?"
    done
  fi
  echo "logs: $DEMO_DIR"
}
trap 'stop_all' EXIT
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM

start_app() { # name port [VAR=value ...]
  local name="$1" port="$2"
  shift 2
  env PORT="$port" HOSTNAME="$name-demo" "$@" node --no-allocation-site-pretenuring "apps/$name/dist/main.js" >"$DEMO_DIR/$name.log" 2>&1 &
  pids+=("$!")
  names+=("$name")
}

# A URL fit for the terminal: a password in it is masked.
mask_url() { printf '%s' "$1" | sed -E 's#://([^:/@]*):[^@/]*@#://\1:***@#'; }

healthy() { # port
  node -e 'fetch(`http://127.0.0.1:${process.argv[1]}/healthz`).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))' "$1"
}

wait_healthy() { # index port
  local i="$1" port="$2"
  for _ in $(seq 1 150); do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      echo "${names[$i]} exited; last log lines:" >&2
      tail -n 20 "$DEMO_DIR/${names[$i]}.log" >&2
      exit 1
    fi
    healthy "$port" && return 0
    sleep 0.2
  done
  echo "${names[$i]} is not healthy on :$port after 30 s; last log lines:" >&2
  tail -n 20 "$DEMO_DIR/${names[$i]}.log" >&2
  exit 1
}

say "starting the apps (logs in $DEMO_DIR)"
# Job control: every app gets its own process group, so a Ctrl-C reaches only this script, which then
# stops the apps one by one with SIGTERM (a second signal would make an app exit without flushing).
set -m
# name:port, in start order (consumers before the producers that feed them)
apps=("outbox-dispatcher:$DISPATCHER_PORT" "audit-ingestor:$INGESTOR_PORT" "revocation-consumer:$REVOCATION_PORT"
  "policy-invalidator:$POLICY_PORT" "observers:$OBSERVERS_PORT" "traffic-generator:$TRAFFIC_PORT")
services=""
for entry in "${apps[@]}"; do
  name="${entry%%:*}" port="${entry##*:}"
  [ -d "apps/$name" ] || continue
  if [ ! -f "apps/$name/dist/main.js" ]; then
    echo "apps/$name is not built here: skipped" >&2
    continue
  fi
  case "$name" in
    audit-ingestor) start_app "$name" "$port" AUDIT_TAMPER_SWEEP_INTERVAL_MS="${AUDIT_TAMPER_SWEEP_INTERVAL_MS:-10000}" AUDIT_GAP_GRACE_MS="${AUDIT_GAP_GRACE_MS:-5000}" ;;
    observers) start_app "$name" "$port" SIEM_FILE_DIR="${SIEM_FILE_DIR:-$DEMO_DIR/siem}" SIEM_FILE_FORMAT="${SIEM_FILE_FORMAT:-ocsf}" ;;
    traffic-generator) start_app "$name" "$port" TRAFFIC_AUDIT_RATE="${TRAFFIC_AUDIT_RATE:-50}" TRAFFIC_OUTBOX_RATE="${TRAFFIC_OUTBOX_RATE:-6}" TRAFFIC_TAMPER="${DEMO_TAMPER:-}" TRAFFIC_TAMPER_EVERY_MS="${TRAFFIC_TAMPER_EVERY_MS:-10000}" ;;
    *) start_app "$name" "$port" ;;
  esac
  wait_healthy $((${#pids[@]} - 1)) "$port"
  services="$services${services:+,}$name:$port"
  printf '  %-20s http://127.0.0.1:%s/healthz  /readyz  /metrics\n' "$name" "$port"
done

echo
echo "  database             $(mask_url "$DATABASE_URL")"
echo "  redis                $(mask_url "$REDIS_URL")  (key prefix: \"${CARACAL_KEY_PREFIX}\")"
echo
if [ "$DEMO_SECONDS" -gt 0 ]; then echo "running for $DEMO_SECONDS s"; else echo "Ctrl-C to stop"; fi

status() { node apps/traffic-generator/scripts/demo-status.mjs --services "$services" --state "$DEMO_DIR/status.json" "$@"; }

started=$SECONDS
next_summary=0
while :; do
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      echo "${names[$i]} stopped unexpectedly; last log lines:" >&2
      tail -n 20 "$DEMO_DIR/${names[$i]}.log" >&2
      exit 1
    fi
  done
  elapsed=$((SECONDS - started))
  if [ "$elapsed" -ge "$next_summary" ]; then
    status
    next_summary=$((next_summary + 5))
  fi
  if [ "$DEMO_SECONDS" -gt 0 ] && [ "$elapsed" -ge "$DEMO_SECONDS" ]; then break; fi
  sleep 1
done

# the summary while every service still runs (readiness and live counters), then stop
status --final
stop_all
