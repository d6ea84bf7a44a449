"""A lab anyone can experiment on without root: nginx on 127.0.0.1 in front of a
backend whose latency, errors and stalls change live.

``Lab(var_dir).start()`` returns a ``LabInfo``; ``LabInfo.script_env()`` is what
experiment scripts need to edit and reload the lab's nginx."""

from smart_tui.lab.nginx import Lab, LabInfo, format_status

__all__ = ["Lab", "LabInfo", "format_status"]
