#!/usr/bin/env bash
# From a fresh clone to real runs of the shipped experiments on a private nginx.
# Creates .venv, installs smart-tui, starts the lab on 127.0.0.1, runs each shipped
# experiment once with short windows, then prints the history and the dashboard path.
set -euo pipefail
cd "$(dirname "$0")/.."

# Short windows so the demo takes about two minutes; production uses smart.conf's.
WINDOW_S="${DEMO_WINDOW_SECONDS:-15}"
export PATH="$PATH:/usr/sbin:/sbin"

if ! command -v nginx >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "demo: installing nginx with apt-get" >&2
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx >/dev/null
    else
        echo "demo: nginx is missing; install it with:" \
            "sudo apt-get install -y nginx" >&2
        exit 9
    fi
fi

if [ ! -x .venv/bin/smart-tui ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q -e . >/dev/null

smart() { .venv/bin/smart-tui "$@"; }

# A clean baseline each time, so a variant kept by an earlier demo is not the start.
smart lab stop >/dev/null
smart lab start --reset

for meta in experiments/*/meta.json; do
    experiment="$(basename "$(dirname "$meta")")"
    echo "demo: running $experiment" >&2
    smart --run-once --experiment "$experiment" \
        --baseline-seconds "$WINDOW_S" --experiment-seconds "$WINDOW_S" \
        --settle-seconds 2 --cooldown-seconds 0
done

echo
smart history --limit 10
echo
echo "dashboard: $(pwd)/www/index.html"
