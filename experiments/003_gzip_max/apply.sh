#!/usr/bin/env bash
# Usage: ./apply.sh LEVEL - turn gzip on at compression LEVEL (1-9) for JSON and text
# on the line marked "# smart: gzip", check with nginx -t and reload.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../_lib/nginx_edit.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/../_lib/nginx_edit.sh"

level="${1:-9}"
[[ "$level" =~ ^[1-9]$ ]] || smart_die "gzip level must be 1-9, got '$level'"

smart_backup
smart_set_marked gzip \
    "gzip on; gzip_comp_level $level; gzip_types application/json text/plain;"
smart_check_and_reload
