"""The server a run measures and changes: its URL, its nginx, and how to tell that
nginx is serving what is on disk.

smart.conf names a real server (``TARGET_URL``, ``NGINX_CONF``, ``NGINX_CMD``); left
empty, they fall back to the running lab's."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from smart_tui.errors import ConfigError, TargetUnreachable
from smart_tui.hands import Hands, helper_argv
from smart_tui.lab import Lab
from smart_tui.nginx_live import NginxWatch
from smart_tui.scripts import Nginx, never_prompt
from smart_tui.settings import Settings


@dataclass(frozen=True)
class Target:
    """What a run measures and changes."""

    url: str
    nginx: Nginx
    watch: NginxWatch
    hands: Hands = field(default_factory=Hands)


def resolve_target(settings: Settings) -> Target:
    """The base URL and nginx of this run: smart.conf's, or the running lab's."""
    named = settings.target_url and settings.nginx_conf and settings.nginx_cmd
    helper = helper_argv(settings.root_helper_cmd)
    if helper and not named:
        raise ConfigError(
            "ROOT_HELPER_CMD is set but TARGET_URL, NGINX_CONF or NGINX_CMD is empty "
            "in smart.conf: the root helper acts only on a named nginx, never the "
            "lab; set all three or empty ROOT_HELPER_CMD"
        )
    if named:
        return Target(
            url=settings.target_url,
            nginx=Nginx(
                conf=settings.nginx_conf_path or Path(settings.nginx_conf),
                command=never_prompt(shlex.split(settings.nginx_cmd)),
                helper=helper,
            ),
            watch=NginxWatch(
                pid_file=Path(settings.nginx_pid_file),
                error_log=Path(settings.nginx_error_log),
            ),
            hands=Hands(helper, settings.script_timeout_seconds),
        )

    lab_info = Lab(settings.var_path).status()
    if lab_info is None or not lab_info.running:
        raise TargetUnreachable(
            "no target: the lab is not running and TARGET_URL, NGINX_CONF or "
            "NGINX_CMD is empty in smart.conf; run `smart-tui lab start` or set "
            "all three"
        )
    return Target(
        url=settings.target_url or lab_info.url,
        nginx=Nginx(conf=lab_info.nginx_conf, command=list(lab_info.nginx_cmd)),
        watch=NginxWatch(
            pid_file=lab_info.prefix / "logs" / "nginx.pid",
            error_log=lab_info.error_log,
        ),
        hands=Hands((), settings.script_timeout_seconds),
    )
