# shellcheck shell=bash
# Sourced by the shipped experiments' apply.sh and revert.sh; not run on its own.
#
# Contract: a line the experiments may change holds one directive and ends in the
# marker comment "# smart: <name>". apply copies $SMART_NGINX_CONF to a backup of its
# own experiment ($SMART_NGINX_CONF.smart-bak.<experiment folder>), rewrites the
# marked line, runs `$SMART_NGINX -t` and reloads; on any failure it puts the exact
# bytes back and exits non-zero. revert puts back only its marked line, as the backup
# has it, checks, reloads and removes the backup: another experiment's change kept
# since stays. A backup left behind means the variant was kept; the next apply of
# the same experiment replaces it.

: "${SMART_NGINX_CONF:?is not set; run this through smart-tui or export it}"
: "${SMART_NGINX:?is not set; e.g. export SMART_NGINX='sudo -n nginx'}"

SMART_EXPERIMENT="$(basename -- "$(cd -- "$(dirname -- "$0")" && pwd)")"
SMART_BACKUP="$SMART_NGINX_CONF.smart-bak.$SMART_EXPERIMENT"
# The marked line as this experiment last set it: a revert refuses to run over a
# line someone changed since, and an apply over its own kept change keeps the backup.
SMART_SET="$SMART_NGINX_CONF.smart-set.$SMART_EXPERIMENT"
SMART_BEFORE=""
SMART_KEPT_BACKUP=0
SMART_NEW_LINE=""
SMART_APPLIED=0
SMART_SCRIPT="${0##*/}"

smart_die() {
    echo "$SMART_SCRIPT: $*" >&2
    exit 1
}

# SMART_NGINX is a shell-quoted command line ("sudo -n nginx", or the lab's nginx
# with -p/-c paths that may hold spaces), so it is parsed by the shell, not split.
smart_nginx() {
    eval "$SMART_NGINX" '"$@"'
}

# The first line nginx marks as an error, else its first line: enough to act on.
smart_first_error() {
    grep -m1 -E '\[(emerg|alert|crit|error)\]' <<<"$1" || head -n1 <<<"$1"
}

# smart_put SOURCE TARGET: TARGET gets SOURCE's bytes all at once: a copy beside it,
# given TARGET's owner and mode, renamed over it. A copy cut short (a full disk)
# never leaves a half file where nginx, or a later revert, would read it.
smart_put() {
    local next="$2.smart-new"
    if ! cat -- "$1" >"$next"; then
        rm -f -- "$next"
        return 1
    fi
    if [[ -e "$2" ]]; then
        chmod --reference="$2" -- "$next"
        chown --reference="$2" -- "$next" 2>/dev/null || true
    fi
    mv -f -- "$next" "$2"
}

# smart_still_set: whether the line this experiment set is still in the config,
# byte for byte.
smart_still_set() {
    local line
    line=$(cat -- "$SMART_SET" 2>/dev/null) || return 1
    [[ -n "$line" ]] && grep -qxF -- "$line" "$SMART_NGINX_CONF"
}

# Undo a failed apply: the config as it was just before it.
smart_restore() {
    smart_put "$SMART_BEFORE" "$SMART_NGINX_CONF"
    if [[ "$SMART_KEPT_BACKUP" == 0 ]]; then
        rm -f -- "$SMART_BACKUP" "$SMART_SET"
    fi
}

# An apply that stops before smart_check_and_reload succeeds leaves no backup of its
# own behind: a backup means "this experiment's change is kept".
smart_apply_ended() {
    if [[ "$SMART_APPLIED" == 0 && "$SMART_KEPT_BACKUP" == 0 ]]; then
        rm -f -- "$SMART_BACKUP"
    fi
    rm -f -- "$SMART_BEFORE"
}

smart_backup() {
    [[ -f "$SMART_NGINX_CONF" ]] || smart_die "$SMART_NGINX_CONF not found"
    SMART_BEFORE=$(mktemp)
    trap smart_apply_ended EXIT
    cat -- "$SMART_NGINX_CONF" >"$SMART_BEFORE"
    if [[ -f "$SMART_BACKUP" ]] && smart_still_set; then
        # This experiment's kept change is live and untouched: its backup holds
        # the line from before it, which a later revert must put back.
        SMART_KEPT_BACKUP=1
        return 0
    fi
    smart_put "$SMART_NGINX_CONF" "$SMART_BACKUP" ||
        smart_die "could not write the backup $SMART_BACKUP"
}

# smart_set_marked MARKER NEW_TEXT: replace the directive(s) on the one line ending in
# "# smart: MARKER" with NEW_TEXT, keeping the indentation and the marker.
smart_set_marked() {
    local marker="# smart: $1" indent
    [[ "$1" =~ ^[A-Za-z0-9_]+$ ]] || smart_die "bad marker name '$1'"
    indent=$(grep -m1 -- "$marker\$" "$SMART_NGINX_CONF" |
        sed 's/[^[:blank:]].*//' || true)
    SMART_NEW_LINE="$indent$2  $marker"
    smart_put_marked_line "$1" "$SMART_NEW_LINE"
}

# smart_put_marked_line MARKER LINE: the one line ending in "# smart: MARKER" becomes
# LINE, byte for byte.
smart_put_marked_line() {
    local marker="# smart: $1" edited count
    [[ "$1" =~ ^[A-Za-z0-9_]+$ ]] || smart_die "bad marker name '$1'"
    count=$(grep -c -- "$marker\$" "$SMART_NGINX_CONF" || true)
    if [[ "$count" != 1 ]]; then
        smart_die "expected one line ending in '$marker' in $SMART_NGINX_CONF," \
            "found $count; add the marker to the line this experiment edits"
    fi
    edited=$(mktemp)
    SMART_MARKER="$marker" SMART_LINE="$2" awk '
        BEGIN { marker = ENVIRON["SMART_MARKER"]; line = ENVIRON["SMART_LINE"] }
        substr($0, length($0) - length(marker) + 1) == marker { print line; next }
        { print }
    ' "$SMART_NGINX_CONF" >"$edited"
    smart_put "$edited" "$SMART_NGINX_CONF" || {
        rm -f -- "$edited"
        smart_die "could not write $SMART_NGINX_CONF"
    }
    rm -f -- "$edited"
}

# Prove the edited config with nginx -t, then reload; undo the edit on failure.
smart_check_and_reload() {
    local output
    if ! output=$(smart_nginx -t 2>&1); then
        smart_restore
        smart_die "nginx -t rejected the change, $SMART_NGINX_CONF restored:" \
            "$(smart_first_error "$output")"
    fi
    if ! output=$(smart_nginx -s reload 2>&1); then
        smart_restore
        smart_die "nginx -s reload failed, $SMART_NGINX_CONF restored (is nginx" \
            "running?): $(smart_first_error "$output")"
    fi
    local record
    record=$(mktemp)
    printf '%s\n' "$SMART_NEW_LINE" >"$record"
    smart_put "$record" "$SMART_SET" || true  # no record: a revert refuses, safely
    rm -f -- "$record"
    SMART_APPLIED=1
}

# smart_revert MARKER: put back the line ending in "# smart: MARKER" exactly as the
# backup holds it, check, reload and remove the backup; on a failed check or reload
# the variant's bytes go back and the script fails.
smart_revert() {
    local marker="# smart: $1" output line count current
    if [[ ! -f "$SMART_BACKUP" ]]; then
        echo "$SMART_SCRIPT: no $SMART_BACKUP, nothing to revert" >&2
        return 0
    fi
    # No record beside a backup: an older smart-tui kept this change, and nothing
    # says whether the line was edited since. Refuse rather than guess.
    if ! smart_still_set; then
        smart_die "the '$marker' line of $SMART_NGINX_CONF may have changed since" \
            "$SMART_EXPERIMENT set it; not reverting over it (check the line, then" \
            "delete $SMART_BACKUP to keep it as it is)"
    fi
    count=$(grep -c -- "$marker\$" "$SMART_BACKUP" || true)
    [[ "$count" == 1 ]] ||
        smart_die "expected one line ending in '$marker' in $SMART_BACKUP, found $count"
    line=$(grep -- "$marker\$" "$SMART_BACKUP")
    current=$(mktemp)
    cat -- "$SMART_NGINX_CONF" >"$current"
    smart_put_marked_line "$1" "$line"
    if ! output=$(smart_nginx -t 2>&1); then
        smart_put "$current" "$SMART_NGINX_CONF"
        rm -f -- "$current"
        smart_die "nginx -t rejects $SMART_NGINX_CONF with the old '$marker' line," \
            "left as it was: $(smart_first_error "$output")"
    fi
    rm -f -- "$current"
    if ! output=$(smart_nginx -s reload 2>&1); then
        smart_die "reverted $SMART_NGINX_CONF but nginx -s reload failed:" \
            "$(smart_first_error "$output")"
    fi
    rm -f -- "$SMART_BACKUP" "$SMART_SET"
}
