"""One experiment run: baseline, then for each variant apply, settle, measure, decide,
revert, cooldown; finally keep the best variant that earned a KEEP, if any.

``run_experiment`` is the single engine behind ``--run-once`` and the app. Whatever
ends a run (a failing script, an exception, a signal turned into ``Interrupted``), the
watched files are put back byte for byte unless a variant was deliberately kept."""

from __future__ import annotations

import logging
import os
import secrets
import shlex
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from smart_tui import aftermath, spool
from smart_tui.config import describe
from smart_tui.errors import ApplyFailed, RevertFailed, SmartError
from smart_tui.experiments import Experiment, Variant
from smart_tui.journal import Journal, JournalEntry
from smart_tui.measuring import MeasuringRun, Observer, VariantResult
from smart_tui.records import RunFiles, Samples, combine, scored_samples
from smart_tui.settings import Settings
from smart_tui.snapshot import Snapshot
from smart_tui.storage import StorageError, Store
from smart_tui.target import Target, resolve_target

log = logging.getLogger("smart_tui.runner")

__all__ = ["Observer", "RunOutcome", "VariantResult", "new_run_id", "run_experiment"]


@dataclass
class RunOutcome:
    """What a finished run decided and left in place."""

    run_id: str
    experiment_id: str
    outcome: str
    kept_variant: str | None
    results: list[VariantResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    run_dir: Path | None = None
    dashboard_path: Path | None = None


def new_run_id(experiment_id: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{experiment_id}-{secrets.token_hex(2)}"


class Run(MeasuringRun):
    """The state of one run in progress. Use ``run_experiment``."""

    def __init__(
        self,
        settings: Settings,
        experiment: Experiment,
        store: Store,
        target: Target,
        observer: Observer,
        trigger: str,
        stop: threading.Event,
    ) -> None:
        self.stop = stop
        self.settings = settings
        self.experiment = experiment
        self.store = store
        self.target = target
        self.observer = observer
        self.trigger = trigger
        self.run_id = new_run_id(experiment.id)
        self.files = RunFiles(settings.var_path / "runs" / self.run_id)
        self.url = experiment.resolve_url(target.url)
        self.hands = target.hands
        self.snapshot = Snapshot.take(experiment.watched(target.nginx.conf))
        self.applied: Variant | None = None
        self.started_s = time.monotonic()
        # What the operator should know although the run went on (shown at the end).
        self.warnings: list[str] = []

    def start_from_baseline(self) -> None:
        """Revert a variant kept by an earlier run, so it is measured afresh; the
        snapshot (what a failure restores) is then the baseline."""
        log.info("recheck: reverting the kept variant before measuring")
        before = self.target.watch.snapshot()
        ok, described = self._script(self.experiment.baseline, revert=True)
        if not ok:
            raise ApplyFailed(
                f"{self.experiment.id}: recheck could not revert to the baseline: "
                f"{described}"
            )
        if not self.snapshot.changed():
            # Measuring the kept variant as if it were the baseline would prove
            # nothing (its backup is gone, or it was never applied).
            raise ApplyFailed(
                f"{self.experiment.id}: the recheck's revert changed no watched file "
                f"({described}); the kept change stays live: undo it by hand to "
                "measure it again"
            )
        if self.snapshot.changed() and self.reloads_nginx:
            not_live = self.target.watch.wait_for_reload(
                before, self.settings.reload_timeout_seconds
            )
            if not_live:
                raise ApplyFailed(
                    f"{self.experiment.id}: recheck revert not live: {not_live}"
                )
        self.snapshot = Snapshot.take(list(self.snapshot.files))
        self.hands.begin(self.run_id, self.experiment)

    @property
    def snapshot_dir(self) -> Path:
        return self.files.folder / "snapshot"

    # Scripts

    def script_env(self, variant: Variant) -> dict[str, str]:
        return {
            "SMART_NGINX_CONF": str(self.target.nginx.conf),
            "SMART_NGINX": shlex.join(self.target.nginx.command),
            "SMART_TARGET_URL": self.url,
            "SMART_RUN_DIR": str(self.files.folder),
            "SMART_VARIANT": variant.name,
            "SMART_RUN_ID": self.run_id,
        }

    def _script(self, variant: Variant, *, revert: bool) -> tuple[bool, str]:
        """Run ``variant``'s apply command, or the experiment's revert."""
        result = self.hands.script(
            self.experiment,
            variant,
            revert=revert,
            run_id=self.run_id,
            env=self.script_env(variant),
        )
        return result.ok, result.describe()

    def apply(self, variant: Variant) -> None:
        """Apply ``variant`` and prove it is live; raise ``ApplyFailed`` when the
        command fails, changes no watched file, or nginx did not take it up."""
        phase = self.store.start_phase(self.run_id, "apply", variant.name)
        self.observer.phase("apply", variant.name, 0)
        self.applied = variant
        before = self.target.watch.snapshot()
        ok, described = self._script(variant, revert=False)
        problem = None if ok else f"applying {variant.name!r} failed: {described}"
        if problem is None and not self.snapshot.changed():
            watched = ", ".join(str(path) for path in self.snapshot.files)
            problem = (
                f"`{variant.apply}` exited 0 but changed no watched file "
                f"({watched}): the variant may be live already (kept earlier), "
                "else fix the script or declare `touches` in meta.json"
            )
        if problem is None and self.reloads_nginx:
            not_live = self.target.watch.wait_for_reload(
                before, self.settings.reload_timeout_seconds
            )
            if not_live:
                problem = f"{variant.name!r} is not live: {not_live}"
                test = self.target.nginx.test()
                if not test.ok:
                    problem += f"; `nginx -t` fails: {test.describe()}"
        if problem is None:
            problem = self._missing_marker(variant, expect=True)
        if problem is not None:
            self.store.finish_phase(phase, "failed", problem)
            raise ApplyFailed(f"{self.experiment.id}: {problem}")
        self.store.finish_phase(phase, "done", described)

    @property
    def reloads_nginx(self) -> bool:
        """Experiments that edit the nginx config must leave it reloaded."""
        return self.target.nginx.conf in self.snapshot.files

    def _missing_marker(self, variant: Variant, *, expect: bool) -> str | None:
        """Check the experiment's marker header is (or is no longer) in responses."""
        header = self.experiment.meta.marker_header
        if not header:
            return None
        try:
            response = httpx.get(self.url, timeout=5.0, headers=self.probe_headers)
        except httpx.HTTPError as exc:
            return f"checking marker header {header}: {type(exc).__name__}"
        if (header in response.headers) == expect:
            return None
        state = "missing from" if expect else "still in"
        return f"marker header {header} is {state} responses for {variant.name!r}"

    @property
    def probe_headers(self) -> dict[str, str]:
        return dict(self.experiment.meta.headers)

    def revert(self) -> None:
        """Return to the baseline: the revert command, then proof it worked. The
        files come first: a database that fails to record this never stops it."""
        variant = self.applied or self.experiment.baseline
        self.observer.phase("revert", variant.name, 0)
        before = self.target.watch.snapshot()
        had_changes = bool(self.snapshot.changed())
        ok, described = self._script(variant, revert=True)
        left = self.snapshot.changed()
        if left:
            # The revert left bytes behind (or failed): the snapshot is the truth.
            names = ", ".join(str(path) for path in left)
            log.warning("revert left %s changed; restoring the snapshot", names)
            self.hands.restore(self.snapshot, self.run_id)
            self._reload_checked()
            described = f"{described}; restored {names} from the snapshot"
            self.warnings.append(
                f"revert of {variant.name!r} left files changed ({described}); "
                "the snapshot put the baseline back: fix the revert script"
            )
        elif not ok:
            # Files are right but the reload may not have happened.
            self._reload_checked()
            self.warnings.append(
                f"revert of {variant.name!r} failed ({described}); the baseline "
                "was reloaded by smart-tui: fix the revert script"
            )
        elif self.reloads_nginx and had_changes:
            not_live = self.target.watch.wait_for_reload(
                before, self.settings.reload_timeout_seconds
            )
            if not_live:
                log.warning("after revert: %s; reloading again", not_live)
                self._reload_checked()
                described = f"{described}; reloaded again ({not_live})"
        self.applied = None
        self.record(
            "phase",
            run_id=self.run_id,
            name="revert",
            variant=variant.name,
            status="done",
            detail=described,
        )

    def record(self, what: str, **fields: object) -> None:
        """Write to the database where losing the write must not stop the run's
        safety work: a failed write is spooled to var/spool/ and the run goes on."""
        spool.record(self.store, self.settings.var_path, self.run_id, what, fields)

    def _reload_checked(self) -> None:
        """Test and reload the (restored) baseline, and prove nginx took it up."""
        before = self.target.watch.snapshot()
        test = self.target.nginx.test()
        if not test.ok:
            raise RevertFailed(
                f"baseline config {self.target.nginx.conf} fails `nginx -t` after "
                f"restore: {test.describe()}; fix it by hand now"
            )
        reload = self.target.nginx.reload()
        if not reload.ok:
            raise RevertFailed(
                f"reloading nginx after restore failed: {reload.describe()}; "
                "check that nginx is running"
            )
        not_live = self.target.watch.wait_for_reload(
            before, self.settings.reload_timeout_seconds
        )
        if not_live:
            raise RevertFailed(f"the restored baseline is not live: {not_live}")

    # Measuring

    def pause(self, name: str, variant: Variant, seconds: float) -> None:
        if seconds <= 0:
            return
        phase = self.store.start_phase(self.run_id, name, variant.name)
        self.observer.phase(name, variant.name, seconds)
        self.stop.wait(seconds)
        self.check_stop()
        self.store.finish_phase(phase, "done", "")

    @property
    def manual(self) -> bool:
        """With APPROVAL=manual decisions wait for an operator; the server stays on
        baseline meanwhile."""
        return self.settings.approval == "manual"

    def try_variants(self) -> tuple[list[VariantResult], str | None]:
        """Measure the baseline, then each variant against it; return the decisions
        and the variant left live (None: the baseline)."""
        settings = self.settings
        switchback = settings.switchback_blocks > 1
        baseline = None
        if not switchback:
            first, _ = self.measure(
                "baseline", self.experiment.baseline, settings.baseline_seconds
            )
            baseline = scored_samples(first)
        results: list[VariantResult] = []
        candidates = self.experiment.candidates
        for index, variant in enumerate(candidates):
            is_last = index == len(candidates) - 1
            if baseline is None:
                results.append(self.switchback(variant))
            else:
                self.apply(variant)
                measured, early = self.measure(
                    "variant",
                    variant,
                    settings.experiment_seconds,
                    self.watch_for(baseline),
                )
                cand = scored_samples(measured)
                results.append(self.judge(variant, baseline, cand, early))
            best = _best_keep(results)
            # The last variant, if it is the best KEEP, simply stays live.
            stays = is_last and best is not None and best.variant == variant.name
            if self.manual or not stays:
                with signals_deferred():
                    self.revert()
                if results[-1].stopped_by == "guardrail":
                    aftermath.notify(
                        settings,
                        "guardrail-rollback",
                        f"{variant.name} reverted: " + "; ".join(results[-1].reasons),
                        self.run_id,
                        self.experiment.id,
                    )
                if not is_last:
                    self.pause("cooldown", variant, settings.cooldown_seconds)

        best = None if self.manual else _best_keep(results)
        if best is not None and self.applied is None:
            # The winner was not the last variant tried: put it back.
            self.apply(self.experiment.variant(best.variant))
        return results, best.variant if best else None

    def switchback(self, variant: Variant) -> VariantResult:
        """Alternate baseline and variant blocks (SWITCHBACK_BLOCKS pairs), so
        slow drift and time-of-day effects fall on both arms alike. After each
        reload SETTLE_SECONDS wash out unscored. Ends with the variant live."""
        settings = self.settings
        blocks = settings.switchback_blocks
        base_blocks: list[tuple[float, Samples]] = []
        variant_blocks: list[tuple[float, Samples]] = []
        early = None
        for block in range(blocks):
            if block:
                with signals_deferred():
                    self.revert()
            offset_s = time.monotonic() - self.started_s
            measured, _ = self.measure(
                "baseline",
                self.experiment.baseline,
                settings.baseline_seconds / blocks,
                washout=block > 0,
            )
            base_blocks.append((offset_s, scored_samples(measured)))
            self.apply(variant)
            offset_s = time.monotonic() - self.started_s
            measured, early = self.measure(
                "variant",
                variant,
                settings.experiment_seconds / blocks,
                self.watch_for(combine(base_blocks), sequential=False),
            )
            variant_blocks.append((offset_s, scored_samples(measured)))
            if early is not None:
                break
        note = f"switchback: {len(variant_blocks)} of {blocks} block pairs measured"
        return self.judge(
            variant, combine(base_blocks), combine(variant_blocks), early, note
        )


def _kept_last_time(store: Store, experiment: Experiment) -> bool:
    """Whether this experiment's latest run left a variant live: running it again
    then means re-testing that variant from the baseline."""
    latest = store.runs(limit=1, experiment_id=experiment.id)
    return bool(latest) and latest[0].outcome == "KEEP"


def _outcome(results: list[VariantResult], kept: str | None) -> str:
    if kept:
        return "KEEP"
    if any(result.decision == "INCONCLUSIVE" for result in results):
        return "INCONCLUSIVE"
    return "REVERT"


def _best_keep(results: list[VariantResult]) -> VariantResult | None:
    keeps = [result for result in results if result.decision == "KEEP"]
    return min(keeps, key=lambda r: r.p50_ratio or 1.0, default=None)


def run_experiment(
    settings: Settings,
    experiment: Experiment,
    store: Store,
    *,
    observer: Observer | None = None,
    trigger: str = "cli",
    target: Target | None = None,
    stop: threading.Event | None = None,
    recheck: bool = False,
) -> RunOutcome:
    """Run ``experiment`` once and leave the server on baseline or the kept variant.

    A ``recheck`` re-tests a variant kept earlier: it first reverts to the
    baseline, so the kept change must win again or it is dropped. Running an
    experiment whose latest run ended in KEEP is always such a recheck.

    Setting ``stop`` (from another thread) ends the run at the next second of
    measurement or pause: it reverts and raises ``Interrupted``."""
    # An unwritable record refuses the run before anything changes.
    store.require_writable()
    target = target or resolve_target(settings)
    run = Run(
        settings,
        experiment,
        store,
        target,
        observer or Observer(),
        trigger,
        stop or threading.Event(),
    )
    run.files.open_log()
    from_baseline = recheck or _kept_last_time(store, experiment)
    try:
        # With a root helper, root keeps its own copy of the files before any change.
        run.hands.begin(run.run_id, experiment)
        run.snapshot.save(run.snapshot_dir)
        # The journal goes first: from here on a killed process is recovered.
        journal = Journal(settings.var_path)
        journal.write(
            JournalEntry(
                run_id=run.run_id,
                experiment_id=experiment.id,
                pid=os.getpid(),
                snapshot_dir=run.snapshot_dir,
                nginx_conf=target.nginx.conf,
                nginx_command=target.nginx.command,
                helper=list(target.hands.helper),
            )
        )
    except BaseException:
        run.files.close_log()
        raise
    log.info("run %s of %s against %s", run.run_id, experiment.id, run.url)

    try:
        store.start_run(
            run.run_id,
            experiment.id,
            trigger=trigger,
            pid=os.getpid(),
            host=socket.gethostname(),
            settings={row.key: row.value_shown for row in describe(settings)},
        )
        if from_baseline:
            # Recorded like any step: a recheck that cannot go back to the baseline
            # ends APPLY_FAILED, and the kept change is no longer due a recheck.
            run.start_from_baseline()
            run.snapshot.save(run.snapshot_dir)
        results, kept = run.try_variants()
        outcome = "PENDING" if run.manual else _outcome(results, kept)
        store.finish_run(run.run_id, status="done", outcome=outcome, kept_variant=kept)
        journal.clear()
        log.info("run %s: %s, kept %s", run.run_id, outcome, kept or "baseline")
    except (sqlite3.Error, StorageError) as exc:
        # Losing the record mid-run ends the run: a decision must be auditable.
        _abort(run, exc)
        raise StorageError(
            f"run {run.run_id}: writing the database {store.path} failed ({exc}); "
            "the server was put back on its baseline; what could not be recorded "
            f"waits in {run.settings.var_path / spool.SPOOL_DIR} for the next start"
        ) from exc
    except BaseException as exc:
        _abort(run, exc)
        raise
    finally:
        run.files.close_log()
    if not run.manual:
        _mark_acted(store, run.run_id, kept)
    return RunOutcome(
        run_id=run.run_id,
        experiment_id=experiment.id,
        outcome=outcome,
        kept_variant=kept,
        results=results,
        warnings=run.warnings,
        run_dir=run.files.folder,
        dashboard_path=aftermath.after_run(settings, store, run.run_id, experiment),
    )


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP until the block ends: a second Ctrl-C must not
    cut a revert in half. They are delivered (and acted on) afterwards."""
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _abort(run: Run, exc: BaseException) -> None:
    """Return to baseline after a failure, then record how the run ended."""
    reason = exc.message if isinstance(exc, SmartError) else repr(exc)
    log.error("run %s stopping: %s", run.run_id, reason)
    revert_error: str | None = None
    with signals_deferred():
        if run.applied is not None or run.snapshot.changed():
            try:
                run.revert()
            except SmartError as revert_exc:
                revert_error = revert_exc.message
                log.error("%s", revert_error)
    outcome = "APPLY_FAILED" if isinstance(exc, ApplyFailed) else "ABORTED"
    message = reason if revert_error is None else f"{reason}; {revert_error}"
    if revert_error is None:
        Journal(run.settings.var_path).clear()
    run.record(
        "finish",
        run_id=run.run_id,
        experiment_id=run.experiment.id,
        status="failed",
        outcome=outcome,
        error=message,
    )
    run.record(
        "event", kind="run-failed", message=message, run_id=run.run_id, level="error"
    )
    kind = "revert-failed" if revert_error else "apply-failed"
    if revert_error or isinstance(exc, ApplyFailed):
        aftermath.after_failure(
            run.settings, run.store, run.run_id, run.experiment, kind, message
        )
    else:
        aftermath.refresh_dashboard(run.settings, run.store)


def _mark_acted(store: Store, run_id: str, kept: str | None) -> None:
    with store.db.conn:
        store.db.execute(
            "update decisions set acted = case when variant = ? then 'kept' "
            "else 'reverted' end where run_id = ?",
            [kept, run_id],
        )
