#!/usr/bin/env bash
# Install smart-tui on this server from this checkout, or remove it again.
#
#   bash deploy/install.sh [--prefix DIR] [--no-systemd] [--no-nginx]
#                          [--listen ADDR] [--uninstall] [--render DIR]
#
# Lays out /opt/smart (smart.conf, experiments/, var/runs/, www/, venv/, root-state/),
# installs smart-tui into venv/, the systemd service and timer, a sudoers drop-in
# that lets the smart user run venv/bin/smart-tui-root as root (checked with
# visudo -cf first), an nginx site for the dashboard and a logrotate rule.
# Owners: root keeps smart.conf (group: the user's, mode 0640), experiments/, venv/
# and root-state/ (0700); the user owns var/ and www/.
# Idempotent: a second run changes nothing and says so. Every path it creates is
# listed in /opt/smart/.install-manifest, which --uninstall follows.
#
# --prefix DIR   install under DIR instead of / (DIR/opt/smart, DIR/etc/...). With a
#                prefix nothing outside DIR is touched: no user is created, no
#                systemctl, no nginx reload, no ROOT_HELPER_CMD. Run as root with
#                SMART_USER naming an existing user, files inside DIR get the same
#                owners as on a server; otherwise they keep the caller as owner.
# --no-systemd   no service or timer
# --no-nginx     no nginx site (serve DIR/opt/smart/www yourself)
# --listen ADDR  the site's nginx `listen` value (default 80)
# --uninstall    remove everything this script added under the same prefix,
#                including /opt/smart with its run history (var/): copy it first
# --render DIR   write the rendered units, sudoers, site and logrotate files into
#                DIR for review, and exit without installing anything
#
# Environment: SMART_PYTHON (python for the venv, default python3), SMART_PIP_OPTS
# (extra pip options, e.g. --index-url of a mirror), SMART_USER (default smart).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
# The root helper refuses a venv or experiments/ that group or others may write:
# whatever umask the caller has, nothing created here is.
umask 0022

CHECKOUT="$(cd "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
DEPLOY="$CHECKOUT/deploy"
PREFIX=""
SYSTEMD=1
NGINX_SITE=1
LISTEN="80"
UNINSTALL=0
RENDER_DIR=""
SMART_USER="${SMART_USER:-smart}"
PYTHON="${SMART_PYTHON:-python3}"
UNIT=smart-experiment
CHANGES=0
OWNED=0 # 1: files get their server owners (root, the user and its group)
SMART_GROUP=""

say() { echo "install.sh: $*"; }
die() {
    echo "install.sh: error: $*" >&2
    exit 1
}
changed() {
    CHANGES=$((CHANGES + 1))
    say "$*"
}

while [ "$#" -gt 0 ]; do
    case "$1" in
    --prefix)
        [ "$#" -ge 2 ] || die "--prefix needs a folder"
        PREFIX="$2"
        shift 2
        ;;
    --listen)
        [ "$#" -ge 2 ] || die "--listen needs a value, e.g. --listen 8080"
        LISTEN="$2"
        shift 2
        ;;
    --render)
        [ "$#" -ge 2 ] || die "--render needs a folder"
        RENDER_DIR="$2"
        shift 2
        ;;
    --no-systemd) SYSTEMD=0 && shift ;;
    --no-nginx) NGINX_SITE=0 && shift ;;
    --uninstall) UNINSTALL=1 && shift ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown option '$1'; see --help" ;;
    esac
done

if [ -n "$PREFIX" ]; then
    mkdir -p -- "$PREFIX"
    PREFIX="$(cd -- "$PREFIX" && pwd)"
    [ "$PREFIX" != / ] || PREFIX=""
fi
# Paths end up in sudoers, unit files and nginx config: keep them to characters
# none of those formats treats specially.
[[ "$PREFIX" =~ ^[A-Za-z0-9_./-]*$ ]] ||
    die "prefix '$PREFIX' holds characters sudoers/systemd/nginx would misread;" \
        "use [A-Za-z0-9_./-]"
[[ "$LISTEN" =~ ^[][A-Za-z0-9_.:]+$ ]] ||
    die "--listen '$LISTEN' is not an address or port"
[[ "$SMART_USER" =~ ^[a-z_][a-z0-9_-]*$ ]] ||
    die "SMART_USER '$SMART_USER' is not a user name"

BASE="$PREFIX/opt/smart"
ETC="$PREFIX/etc"
VENV="$BASE/venv"
MANIFEST="$BASE/.install-manifest"
SERVICE_FILE="$ETC/systemd/system/$UNIT.service"
TIMER_FILE="$ETC/systemd/system/$UNIT.timer"
SUDOERS_FILE="$ETC/sudoers.d/smart"
SITE_FILE="$ETC/nginx/sites-available/smart-dashboard"
SITE_LINK="$ETC/nginx/sites-enabled/smart-dashboard"
LOGROTATE_FILE="$ETC/logrotate.d/smart"
NGINX_BIN="$(command -v nginx || echo /usr/sbin/nginx)"

# Only a real install (to /) acts on the running system.
live() { [ -z "$PREFIX" ]; }

# decide_owners: chown only as root and only to a user that exists (a live install
# creates it first); the user's primary group is not always named after it.
decide_owners() {
    OWNED=0
    SMART_GROUP=""
    if [ "$(id -u)" = 0 ] && id -u "$SMART_USER" >/dev/null 2>&1; then
        OWNED=1
        SMART_GROUP="$(id -gn "$SMART_USER")"
    fi
}

# --- the manifest -------------------------------------------------------------
# One "kind path" per line: dir, file, link, relink (a link this script removed
# and puts back), user, setting (a smart.conf key this script has set, so a re-run
# leaves the operator's later value alone; --uninstall ignores it). Lines are only
# ever added once.

MANIFEST_LINES=()
load_manifest() {
    MANIFEST_LINES=()
    if [ -f "$MANIFEST" ]; then
        mapfile -t MANIFEST_LINES <"$MANIFEST"
    fi
}
recorded() {
    local line
    for line in "${MANIFEST_LINES[@]}"; do
        [ "$line" != "$1" ] || return 0
    done
    return 1
}
record() {
    recorded "$1" || MANIFEST_LINES+=("$1")
}
save_manifest() {
    local text
    text="$(printf '%s\n' "${MANIFEST_LINES[@]}")"
    if [ ! -f "$MANIFEST" ] || [ "$(cat -- "$MANIFEST")" != "$text" ]; then
        printf '%s\n' "$text" >"$MANIFEST"
        chmod 0644 "$MANIFEST"
    fi
}

# --- idempotent steps -----------------------------------------------------------

# ensure_dir DIR MODE: create DIR and any missing parents, recording each.
ensure_dir() {
    local dir="$1" mode="$2" missing=() parent
    parent="$dir"
    while [ ! -d "$parent" ]; do
        missing=("$parent" "${missing[@]}")
        parent="$(dirname -- "$parent")"
    done
    for parent in "${missing[@]}"; do
        mkdir -m 0755 -- "$parent"
        record "dir $parent"
        changed "created $parent/"
    done
    if [ "$(stat -c %a -- "$dir")" != "${mode#0}" ]; then
        chmod "$mode" -- "$dir"
        changed "set mode $mode on $dir/"
    fi
}

# put_file SRC DEST MODE: copy SRC to DEST when its bytes or mode differ.
put_file() {
    local src="$1" dest="$2" mode="$3"
    ensure_dir "$(dirname -- "$dest")" 0755
    if [ -f "$dest" ] && cmp -s -- "$src" "$dest"; then
        if [ "$(stat -c %a -- "$dest")" != "${mode#0}" ]; then
            chmod "$mode" -- "$dest"
            changed "set mode $mode on $dest"
        fi
    else
        # A temporary copy renamed into place: readers never see half a file.
        cp -- "$src" "$dest.smart-new"
        chmod "$mode" -- "$dest.smart-new"
        mv -f -- "$dest.smart-new" "$dest"
        changed "wrote $dest"
    fi
    record "file $dest"
}

# ensure_owner PATH USER:GROUP [flat]: chown PATH (and all below it unless flat)
# when any of it belongs to someone else. Only when OWNED=1.
ensure_owner() {
    [ "$OWNED" = 1 ] || return 0
    local path="$1" owner="$2" depth=() recurse=(-R)
    if [ "${3:-}" = flat ]; then
        depth=(-maxdepth 0)
        recurse=()
    fi
    if [ -n "$(find "$path" "${depth[@]}" \( ! -user "${owner%%:*}" -o \
        ! -group "${owner##*:}" \) -print -quit)" ]; then
        chown -h "${recurse[@]}" -- "$owner" "$path"
        changed "gave $path to $owner"
    fi
}

# ensure_root_only DIR: DIR and all below it root's and not writable by group or
# others (symbolic links aside: their mode means nothing). Only when OWNED=1.
ensure_root_only() {
    [ "$OWNED" = 1 ] || return 0
    ensure_owner "$1" root:root
    if [ -n "$(find "$1" ! -type l -perm /022 -print -quit)" ]; then
        find "$1" ! -type l -perm /022 -exec chmod go-w -- {} +
        changed "made $1 writable by root only"
    fi
}

# ensure_file_mode FILE MODE
ensure_file_mode() {
    if [ "$(stat -c %a -- "$1")" != "${2#0}" ]; then
        chmod "$2" -- "$1"
        changed "set mode $2 on $1"
    fi
}

WORK="$(mktemp -d)"
trap 'rm -rf -- "$WORK"' EXIT

# render TEMPLATE OUT: fill in the @NAME@ placeholders.
render() {
    sed -e "s|@BASE@|$BASE|g" -e "s|@USER@|$SMART_USER|g" \
        -e "s|@WWW@|$BASE/www|g" -e "s|@LISTEN@|$LISTEN|g" \
        -e "s|@NGINX@|$NGINX_BIN|g" -e "s|@SCHEDULE@|$SCHEDULE|g" \
        -e "s|@RANDOM_DELAY@|$RANDOM_DELAY|g" -- "$1" >"$2"
}

# file_setting KEY: KEY's value as the installed smart.conf alone gives it (the
# file, else the default; never the caller's environment).
file_setting() {
    "$VENV/bin/python" -P -c 'import sys
from pathlib import Path
from smart_tui.config import load_settings
settings = load_settings(Path(sys.argv[1]), environ={})
print(getattr(settings, sys.argv[2].lower()))' "$BASE/smart.conf" "$1"
}

# setting KEY: the effective smart.conf value, as smart-tui itself reads it.
setting() {
    if [ -x "$VENV/bin/python" ] && [ -f "$BASE/smart.conf" ]; then
        # -P: import the installed smart_tui, never one in the current folder.
        SMART_CONFIG="$BASE/smart.conf" "$VENV/bin/python" -P -c \
            'import sys; from smart_tui.config import load_settings as s
print(getattr(s(), sys.argv[1].lower()))' "$1"
    else
        # Not installed yet: the checkout's smart.conf, split as the shell would.
        "$PYTHON" -c 'import shlex, sys
for line in open(sys.argv[1], encoding="utf-8"):
    words = shlex.split(line, comments=True)
    if words and words[0].startswith(sys.argv[2] + "="):
        value = words[0].partition("=")[2]
print(value)' "$CHECKOUT/smart.conf" "$1"
    fi
}

render_all() {
    local out="$1"
    SCHEDULE="$(setting TIMER_SCHEDULE)"
    RANDOM_DELAY="$(setting TIMER_RANDOM_DELAY)"
    [[ "$SCHEDULE" =~ ^[A-Za-z0-9_.:,/*~\ +-]+$ ]] ||
        die "TIMER_SCHEDULE '$SCHEDULE' is not a systemd calendar event"
    if command -v systemd-analyze >/dev/null 2>&1 &&
        ! systemd-analyze calendar "$SCHEDULE" >/dev/null 2>&1; then
        die "TIMER_SCHEDULE '$SCHEDULE' is rejected by systemd-analyze calendar"
    fi
    mkdir -p -- "$out"
    render "$DEPLOY/$UNIT.service" "$out/$UNIT.service"
    render "$DEPLOY/$UNIT.timer" "$out/$UNIT.timer"
    render "$DEPLOY/sudoers.smart" "$out/sudoers.smart"
    render "$DEPLOY/nginx-site.conf" "$out/nginx-site.conf"
    render "$DEPLOY/logrotate.smart" "$out/logrotate.smart"
}

# --- install --------------------------------------------------------------------

source_hash() {
    (cd -- "$CHECKOUT" && find pyproject.toml README.md smart_tui -type f \
        ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z |
        xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
}

install_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv -- "$VENV"
        changed "created the virtualenv $VENV"
    fi
    local want have=""
    want="$(source_hash)"
    [ ! -f "$VENV/.smart-source" ] || have="$(cat -- "$VENV/.smart-source")"
    if [ "$want" != "$have" ]; then
        # Built from a copy: pip must not leave build/ or egg-info in the checkout.
        mkdir -p -- "$WORK/src"
        cp -r -- "$CHECKOUT/pyproject.toml" "$CHECKOUT/README.md" \
            "$CHECKOUT/smart_tui" "$WORK/src/"
        # shellcheck disable=SC2086 # SMART_PIP_OPTS is a list of options
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
            ${SMART_PIP_OPTS:-} "$WORK/src"
        echo "$want" >"$VENV/.smart-source"
        changed "installed smart-tui from $CHECKOUT into $VENV"
    fi
}

install_user() {
    live || return 0
    # Group adm: on Debian nginx's logs (/var/log/nginx/*.log) are www-data:adm
    # 0640, and runs read the error log and the access log.
    local groups=()
    ! getent group adm >/dev/null || groups=(--groups adm)
    if ! id -u "$SMART_USER" >/dev/null 2>&1; then
        useradd --system --home-dir "$BASE" --no-create-home \
            --shell /usr/sbin/nologin "${groups[@]}" "$SMART_USER"
        record "user $SMART_USER"
        changed "created the system user $SMART_USER"
    elif recorded "user $SMART_USER" && [ "${#groups[@]}" -gt 0 ] &&
        [[ " $(id -nG "$SMART_USER") " != *" adm "* ]]; then
        # A user an older install.sh created, before it joined adm.
        usermod --append --groups adm "$SMART_USER"
        changed "added the user $SMART_USER to the group adm (reads nginx's logs)"
    fi
}

install_layout() {
    ensure_dir "$BASE" 0755
    ensure_dir "$BASE/var" 0750
    ensure_dir "$BASE/var/runs" 0750
    ensure_dir "$BASE/www" 0755
    # smart-tui-root's own snapshots of what root edits: root's alone.
    ensure_dir "$BASE/root-state" 0700
    # experiments/ stays root's: smart-tui-root runs their commands as root.
    local src rel
    while IFS= read -r -d '' src; do
        rel="${src#"$CHECKOUT/"}"
        if [ -x "$src" ]; then
            put_file "$src" "$BASE/$rel" 0755
        else
            put_file "$src" "$BASE/$rel" 0644
        fi
    # Scripts' backups and records (*.smart-bak.*, *.smart-set.*) are not installed.
    done < <(find "$CHECKOUT/experiments" -type f ! -name '*.smart-*' -print0 |
        sort -z)
    if [ ! -f "$BASE/smart.conf" ]; then
        # It may come to hold COACH_TOKEN or webhook URLs: mode 640 when root owns
        # it and only the user's group may read it, else 600 (the caller's).
        install -m "$(conf_mode)" -- "$CHECKOUT/smart.conf" "$BASE/smart.conf"
        record "file $BASE/smart.conf"
        changed "wrote $BASE/smart.conf (an existing one is never overwritten)"
        FRESH_CONF=1
    fi
}

conf_mode() {
    if [ "$OWNED" = 1 ]; then echo 0640; else echo 0600; fi
}

# set_owners: the owners a server needs, when OWNED=1. Root owns what decides
# what root does: smart.conf (so the service cannot change which file root edits;
# the service reads it through its group), experiments/, venv/, root-state/ and
# the folder above them all. The user owns what a run writes: var/ and www/.
set_owners() {
    [ "$OWNED" = 1 ] || return 0
    ensure_owner "$BASE" root:root flat
    ensure_root_only "$BASE/experiments"
    ensure_root_only "$VENV"
    ensure_owner "$BASE/root-state" root:root
    ensure_owner "$BASE/smart.conf" "root:$SMART_GROUP"
    ensure_file_mode "$BASE/smart.conf" "$(conf_mode)"
    ensure_owner "$BASE/var" "$SMART_USER:$SMART_GROUP"
    ensure_owner "$BASE/www" "$SMART_USER:$SMART_GROUP"
}

# update_config KEY=VALUE...: set these in the installed smart.conf, keeping the
# rest of the file, with smart-tui's own (validating, atomic) writer.
update_config() {
    "$VENV/bin/python" -P - "$BASE/smart.conf" "$@" <<'PY'
import sys
from pathlib import Path
from smart_tui.config import update_config_file
changes = dict(arg.partition("=")[::2] for arg in sys.argv[2:])
update_config_file(Path(sys.argv[1]), changes)
PY
}

configure_live_target() {
    # A server install measures and edits the system nginx, not the lab; root's
    # part of each run goes through smart-tui-root. A prefix keeps the lab.
    live || return 0
    local helper="sudo -n $VENV/bin/smart-tui-root $BASE/smart.conf"
    local mark="setting ROOT_HELPER_CMD"
    if [ "${FRESH_CONF:-0}" = 1 ]; then
        update_config TARGET_URL=http://127.0.0.1/ NGINX_CONF=/etc/nginx/nginx.conf \
            "NGINX_CMD=$NGINX_BIN" "ROOT_HELPER_CMD=$helper"
        record "$mark"
        changed "pointed $BASE/smart.conf at the system nginx" \
            "(TARGET_URL, NGINX_*, ROOT_HELPER_CMD)"
    elif ! recorded "$mark" && [ -z "$(file_setting ROOT_HELPER_CMD)" ]; then
        # An older install's smart.conf: only this line changes. Once set here, an
        # empty value later is the operator's choice and is left alone.
        update_config "ROOT_HELPER_CMD=$helper"
        record "$mark"
        changed "set ROOT_HELPER_CMD=\"$helper\" in $BASE/smart.conf (nothing else" \
            "in it changed): root's part of each run now goes through smart-tui-root"
    fi
}

install_sudoers() {
    command -v visudo >/dev/null 2>&1 ||
        die "visudo not found; install sudo (apt-get install -y sudo) and re-run"
    local out
    if ! out="$(visudo -cf "$WORK/rendered/sudoers.smart" 2>&1)"; then
        die "the rendered sudoers file fails visudo -cf, nothing installed: $out"
    fi
    put_file "$WORK/rendered/sudoers.smart" "$SUDOERS_FILE" 0440
}

install_systemd() {
    [ "$SYSTEMD" = 1 ] || return 0
    local before=$CHANGES
    put_file "$WORK/rendered/$UNIT.service" "$SERVICE_FILE" 0644
    put_file "$WORK/rendered/$UNIT.timer" "$TIMER_FILE" 0644
    live || return 0
    if [ "$CHANGES" != "$before" ]; then
        systemctl daemon-reload
    fi
    if ! systemctl is-enabled --quiet "$UNIT.timer" ||
        ! systemctl is-active --quiet "$UNIT.timer"; then
        systemctl enable --now "$UNIT.timer"
        changed "enabled and started $UNIT.timer"
    fi
}

install_nginx_site() {
    [ "$NGINX_SITE" = 1 ] || return 0
    local before=$CHANGES
    put_file "$WORK/rendered/nginx-site.conf" "$SITE_FILE" 0644
    # Debian's layout: nginx.conf includes sites-enabled/*.
    ensure_dir "$(dirname -- "$SITE_LINK")" 0755
    if [ ! -L "$SITE_LINK" ]; then
        ln -s -- "$SITE_FILE" "$SITE_LINK"
        record "file $SITE_LINK"
        changed "enabled the site $SITE_LINK"
    fi
    # Debian's welcome site also claims port 80 as default_server; ours replaces it
    # there, and --uninstall puts the link back.
    local default="$ETC/nginx/sites-enabled/default"
    if [ "$LISTEN" = 80 ] && [ -L "$default" ]; then
        record "relink $default $(readlink -- "$default")"
        rm -f -- "$default"
        changed "disabled the default nginx site (restored by --uninstall)"
    fi
    live || return 0
    if [ "$CHANGES" != "$before" ]; then
        "$NGINX_BIN" -t -q || die "nginx -t fails with the dashboard site; see above"
        systemctl reload nginx || say "nginx is not running; start it to serve www/"
    fi
}

do_install() {
    if live && [ "$(id -u)" != 0 ]; then
        die "installing to / needs root; run with sudo, or use --prefix DIR"
    fi
    load_manifest
    install_user
    decide_owners
    if ! live && [ "$OWNED" = 1 ]; then
        say "prefix $PREFIX: no user created, no systemctl, no nginx reload;" \
            "owners as on a server (root, $SMART_USER:$SMART_GROUP)"
    elif ! live; then
        say "prefix $PREFIX: no user created, no systemctl, no nginx reload;" \
            "no chown, files keep $(id -un) as owner (chown needs root and an" \
            "existing user $SMART_USER)"
    fi
    install_layout
    install_venv
    configure_live_target
    render_all "$WORK/rendered"
    install_sudoers
    install_systemd
    install_nginx_site
    put_file "$WORK/rendered/logrotate.smart" "$LOGROTATE_FILE" 0644
    set_owners
    save_manifest
    if [ "$CHANGES" = 0 ]; then
        say "nothing changed: $BASE is up to date"
    else
        say "done: $CHANGES change(s) under ${PREFIX:-/}"
    fi
}

# --- uninstall ------------------------------------------------------------------

do_uninstall() {
    if live && [ "$(id -u)" != 0 ]; then
        die "uninstalling from / needs root; run with sudo"
    fi
    if [ ! -f "$MANIFEST" ]; then
        say "nothing to uninstall: no $MANIFEST"
        return 0
    fi
    load_manifest
    if live && [ -f "$SERVICE_FILE" ]; then
        systemctl disable --now "$UNIT.timer" 2>/dev/null || true
    fi
    local index line kind rest dirs=()
    for ((index = ${#MANIFEST_LINES[@]} - 1; index >= 0; index--)); do
        line="${MANIFEST_LINES[index]}"
        kind="${line%% *}"
        rest="${line#* }"
        case "$kind" in
        file) rm -f -- "$rest" ;;
        relink) ln -sfn -- "${rest#* }" "${rest%% *}" ;;
        dir) dirs+=("$rest") ;;
        user) live && userdel "$rest" ;;
        esac
    done
    # Everything under /opt/smart is smart-tui's own: config, venv, runs, dashboard.
    rm -rf -- "$BASE"
    for line in "${dirs[@]}"; do
        [ ! -d "$line" ] || rmdir --ignore-fail-on-non-empty -- "$line"
    done
    if live; then
        systemctl daemon-reload || true
        if [ "$NGINX_SITE" = 1 ] && "$NGINX_BIN" -t -q 2>/dev/null; then
            systemctl reload nginx || true
        fi
    fi
    say "removed smart-tui from ${PREFIX:-/}"
}

if [ -n "$RENDER_DIR" ]; then
    render_all "$RENDER_DIR"
    say "rendered into $RENDER_DIR; nothing installed"
elif [ "$UNINSTALL" = 1 ]; then
    do_uninstall
else
    do_install
fi
