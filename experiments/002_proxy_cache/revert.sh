#!/usr/bin/env bash
# Put back the marked line as it was before apply.sh, check with nginx -t and reload.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../_lib/nginx_edit.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/../_lib/nginx_edit.sh"

smart_revert proxy_cache
