#!/usr/bin/env bash
# Usage: ./apply.sh on - on the line marked "# smart: proxy_cache", cache 200
# responses for 10 s in the zone app_cache with one upstream fetch per key at a time,
# and show HIT/MISS in X-Cache-Status. Needs proxy_cache_path ... keys_zone=app_cache.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../_lib/nginx_edit.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/../_lib/nginx_edit.sh"

[[ "${1:-}" == on ]] || smart_die "usage: ./apply.sh on"
grep -q 'keys_zone=app_cache:' "$SMART_NGINX_CONF" ||
    smart_die "no 'proxy_cache_path ... keys_zone=app_cache:...' in" \
        "$SMART_NGINX_CONF; declare the zone first"

# Single quotes: $upstream_cache_status is an nginx variable, not a shell one.
# shellcheck disable=SC2016
status_header='add_header X-Cache-Status $upstream_cache_status always;'
cache_on="proxy_cache app_cache; proxy_cache_valid 200 10s; proxy_cache_lock on;"

smart_backup
smart_set_marked proxy_cache "$cache_on $status_header"
smart_check_and_reload
