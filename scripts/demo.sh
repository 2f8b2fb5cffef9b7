#!/usr/bin/env bash
# Local demo without Docker: Node (22 or 24; Node 24 is installed from npm when older) and a local Redis and PostgreSQL (started by ensure-services.sh if
# they do not answer). Installs, builds, migrates, then runs the outbox dispatcher, the audit ingestor and
# the traffic generator as background processes, prints their URLs and a live summary every 5 s, and
# stops them all on Ctrl-C.
#
#   bash scripts/demo.sh                    # until Ctrl-C
#   DEMO_SECONDS=20 bash scripts/demo.sh    # stop by itself after 20 s (exit 0 if all went well)
#
# Settings (environment): DATABASE_URL, REDIS_URL, STREAMS_HMAC_KEY / AUDIT_HMAC_KEY (hex, >= 32 bytes;
# random dev keys are generated when unset), CARACAL_KEY_PREFIX (Redis key prefix, default none),
# DISPATCHER_PORT 9091, INGESTOR_PORT 9090, TRAFFIC_PORT 9092, TRAFFIC_AUDIT_RATE 50,
# TRAFFIC_OUTBOX_RATE 2, DEMO_DIR (logs and replay dir; default a new /tmp/caracal-demo.*),
# DEMO_SKIP_INSTALL=1 / DEMO_SKIP_BUILD=1 to rerun quickly.
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
pnpm db:migrate

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
start_app outbox-dispatcher "$DISPATCHER_PORT"
wait_healthy 0 "$DISPATCHER_PORT"
start_app audit-ingestor "$INGESTOR_PORT"
wait_healthy 1 "$INGESTOR_PORT"
start_app traffic-generator "$TRAFFIC_PORT" TRAFFIC_AUDIT_RATE="${TRAFFIC_AUDIT_RATE:-50}" TRAFFIC_OUTBOX_RATE="${TRAFFIC_OUTBOX_RATE:-2}"
wait_healthy 2 "$TRAFFIC_PORT"

cat <<EOF

  outbox-dispatcher  http://127.0.0.1:$DISPATCHER_PORT/healthz  /readyz  /metrics
  audit-ingestor     http://127.0.0.1:$INGESTOR_PORT/healthz  /readyz  /metrics
  traffic-generator  http://127.0.0.1:$TRAFFIC_PORT/healthz  /readyz  /metrics
  database           $(mask_url "$DATABASE_URL")
  redis              $(mask_url "$REDIS_URL")  (key prefix: "${CARACAL_KEY_PREFIX}")

EOF
if [ "$DEMO_SECONDS" -gt 0 ]; then echo "running for $DEMO_SECONDS s"; else echo "Ctrl-C to stop"; fi

summary() { node apps/traffic-generator/scripts/demo-summary.mjs; }

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
    summary
    next_summary=$((next_summary + 5))
  fi
  if [ "$DEMO_SECONDS" -gt 0 ] && [ "$elapsed" -ge "$DEMO_SECONDS" ]; then break; fi
  sleep 1
done

stop_all
say "final numbers"
summary
