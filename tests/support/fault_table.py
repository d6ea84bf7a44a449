"""The outcome table of docs/faults.md, written from what the fault tests observed.

Each test in tests/test_faults_more.py calls ``record`` with what it saw (server and
record state are measured, not typed); ``python -m tests.support.fault_table``
renders every row found in tests/artifacts/faults/ plus the faults covered by older
tests, which are listed by name with the result of their last run by hand."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
ROWS = REPO / "tests" / "artifacts" / "faults"
DOC = REPO / "docs" / "faults.md"

# Faults whose tests predate this table: (fault, test, what happens, verified).
ELSEWHERE = [
    (
        "SIGKILL at each of 8 points (after journal, after apply, mid-settle, "
        "mid-measure, mid-decision, mid-revert, database write, dashboard write)",
        "tests/test_faults.py::test_sigkill_ends_on_baseline_with_the_run_recorded",
        "next command recovers from the journal: snapshot restored, nginx -t, "
        "reload; run ABORTED (dashboard-write: already recorded REVERT)",
    ),
    (
        "apply script fails half-way",
        "tests/test_run_once.py::test_failing_apply_reverts_and_exits_apply_failed",
        "APPLY_FAILED (exit 5), snapshot restores the half-written bytes",
    ),
    (
        "apply exits 0 but changes nothing",
        "tests/test_run_once.py::test_apply_that_changes_nothing_is_apply_failed",
        "APPLY_FAILED (exit 5) naming the watched files",
    ),
    (
        "SIGTERM mid-measure",
        "tests/test_run_once.py::test_sigterm_mid_measure_reverts",
        "reverted before exit, INTERRUPTED (130), run ABORTED",
    ),
    (
        "SIGKILL mid-variant on a server run through the root helper (service "
        "user `nobody`, root-owned nginx.conf)",
        "tests/test_root_helper.py::"
        "test_kill_9_mid_run_is_recovered_by_root_from_its_own_copy",
        "`smart-tui recover` as the service user has root write back root's own "
        "snapshot of the run; baseline bytes, run ABORTED",
    ),
    (
        "an experiment file the service user could change (apply.sh mode 0775) "
        "with the root helper",
        "tests/test_root_helper.py::test_root_trusts_no_file_the_user_could_change",
        "refused before any change: BAD_CONFIG (exit 3) naming the file and "
        "`chmod go-w`; doctor FAILs on it (exit 11)",
    ),
]


def record(
    test: str, fault: str, happened: str, server: str, stored: str, ok: bool
) -> None:
    """Save one observed row (called by a test before it asserts)."""
    ROWS.mkdir(parents=True, exist_ok=True)
    row = {
        "test": test,
        "fault": fault,
        "happened": happened,
        "server": server,
        "record": stored,
        "ok": ok,
    }
    (ROWS / f"{test}.json").write_text(json.dumps(row, indent=2))


def _cell(text: str) -> str:
    # A test's temporary folder says nothing to a reader of the table.
    text = re.sub(r"/tmp/pytest-of-[^/]+/pytest-\d+/[^/\s]+", "$TMP", text)
    return text.replace("|", "\\|").replace("\n", " ")


def render(last_run: str) -> str:
    rows = [json.loads(path.read_text()) for path in sorted(ROWS.glob("*.json"))]
    good = sum(row["ok"] for row in rows)
    lines = [
        "| fault | what happened | server after | record after | ok | test |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            "| "
            + " | ".join(
                _cell(row[key]) for key in ("fault", "happened", "server", "record")
            )
            + f" | {'yes' if row['ok'] else '**NO**'} | `{row['test']}` |"
        )
    older = [
        "| fault | what happens | test |",
        "|---|---|---|",
        *(f"| {_cell(f)} | {_cell(h)} | `{t}` |" for f, t, h in ELSEWHERE),
    ]
    return "\n".join(
        [
            f"{good} of {len(rows)} observed faults ended on a valid baseline config "
            f"(nginx -t passing, serving) with the run recorded. Last run: "
            f"{last_run}.",
            "",
            *lines,
            "",
            "Faults covered by earlier tests (rows not generated; see the tests):",
            "",
            *older,
        ]
    )


def main() -> int:
    """Print the table (docs/faults.md embeds it between its markers)."""
    last_run = sys.argv[1] if len(sys.argv) > 1 else "unknown"
    print(render(last_run))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
