"""``python -m smart_tui.probe --child``: the load process ``run_probe`` starts.

It reads its config as JSON on stdin and writes result frames on stdout; it is not
meant to be run by hand (use ``smart-tui probe``)."""

import sys

from smart_tui.probe.engine import child_main

if __name__ == "__main__":
    if sys.argv[1:] != ["--child"]:
        sys.stderr.write("internal entry point of run_probe; use `smart-tui probe`\n")
        raise SystemExit(2)
    raise SystemExit(child_main())
