#!/usr/bin/env bash
# What the control plane costs at the relay peak (issue 12's figure):
# perf/together.sh with
#   admin  the admin server on, /metrics scraped every second and one event
#          stream of every delivery-log record open all the while (curl);
#   none   `--admin ""`: no admin server at all.
# WATCH (default "metrics events") picks the admin clients: "" leaves the
# server on with none; STREAMS opens more event streams. Everything else
# (QUOTA, OUT, the arguments) is perf/together.sh's.
#
#   perf/admin-overhead-together.sh [MESSAGES] [SESSIONS] [SIZE] [ROUNDS] [CORES]
#   perf/admin-overhead-together.sh 30000 20 4096 24 2
set -euo pipefail
cd "$(dirname "$0")/.."
LABEL_A=admin ADMIN_A=1 WATCH_A=${WATCH-metrics events} LABEL_B=none \
  OUT=${OUT:-perf/results/admin-overhead-together-$(date +%Y-%m-%d).csv} \
  exec perf/together.sh "$@"
