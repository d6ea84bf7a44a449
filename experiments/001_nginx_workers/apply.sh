#!/usr/bin/env bash
# Usage: ./apply.sh auto|N - set worker_processes on the line marked
# "# smart: worker_processes", check with nginx -t and reload.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../_lib/nginx_edit.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/../_lib/nginx_edit.sh"

workers="${1:-auto}"
[[ "$workers" =~ ^(auto|[1-9][0-9]{0,2})$ ]] ||
    smart_die "worker count must be 'auto' or 1-999, got '$workers'"

smart_backup
smart_set_marked worker_processes "worker_processes $workers;"
smart_check_and_reload
