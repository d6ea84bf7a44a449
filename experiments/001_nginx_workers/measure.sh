#!/usr/bin/env bash
# Print "timestamp,latency_ms,status" CSV lines (no header), one per curl request to
# $SMART_TARGET_URL, as the bash seed did. Bounded: SMART_MEASURE_COUNT requests
# (default 50, at most 10000), each given at most 5 s; status 000 means no answer.
set -euo pipefail

: "${SMART_TARGET_URL:?is not set; e.g. export SMART_TARGET_URL=http://127.0.0.1:8080/}"
count="${SMART_MEASURE_COUNT:-50}"
if ! [[ "$count" =~ ^[0-9]{1,5}$ ]] || ((count < 1 || count > 10000)); then
    echo "measure.sh: SMART_MEASURE_COUNT must be 1-10000, got '$count'" >&2
    exit 1
fi

for ((i = 0; i < count; i++)); do
    # --noproxy: a proxy from the environment must not sit between probe and server.
    result=$(curl --silent --output /dev/null --noproxy '*' --max-time 5 \
        --write-out '%{http_code} %{time_total}' "$SMART_TARGET_URL" || true)
    read -r status seconds <<<"${result:-000 0}"
    latency_ms=$(awk -v s="${seconds:-0}" 'BEGIN { printf "%.3f", s * 1000 }')
    printf '%s,%s,%s\n' "$(date +%s)" "$latency_ms" "${status:-000}"
done
