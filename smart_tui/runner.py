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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jinja2
import numpy as np
import numpy.typing as npt

from smart_tui import dashboard
from smart_tui.config import Settings, describe
from smart_tui.decide import decide
from smart_tui.errors import (
    ApplyFailed,
    Interrupted,
    RevertFailed,
    SmartError,
)
from smart_tui.experiments import Experiment, Variant
from smart_tui.journal import Journal, JournalEntry
from smart_tui.probe import ProbeConfig, ProbeResult, SecondStats, run_probe
from smart_tui.records import (
    RunFiles,
    samples_for_store,
    scored_samples,
    second_row,
    window_summary,
)
from smart_tui.scripts import run_command
from smart_tui.sequential import EarlyStop, VariantWatch
from smart_tui.snapshot import Snapshot
from smart_tui.storage import StorageError, Store
from smart_tui.target import Target, resolve_target

log = logging.getLogger("smart_tui.runner")


@dataclass
class VariantResult:
    """How one candidate variant fared against the baseline."""

    variant: str
    decision: str
    reasons: list[str]
    p50_ratio: float | None = None


@dataclass
class RunOutcome:
    """What a finished run decided and left in place."""

    run_id: str
    experiment_id: str
    outcome: str
    kept_variant: str | None
    results: list[VariantResult] = field(default_factory=list)
    run_dir: Path | None = None
    dashboard_path: Path | None = None


class Observer:
    """Receives a run's progress; the CLI and the app subclass it. Does nothing."""

    def phase(self, name: str, variant: str | None, duration_s: float) -> None:
        """A phase began; ``duration_s`` is its planned length (0 if unknown)."""

    def second(self, role: str, variant: str, stats: SecondStats) -> None:
        """One second of probe figures arrived."""

    def decided(self, variant: str, decision: str, reasons: list[str]) -> None:
        """A variant was decided."""


def new_run_id(experiment_id: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{experiment_id}-{secrets.token_hex(2)}"


class Run:
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
        watched = [Path(path) for path in experiment.meta.touches] or [
            target.nginx.conf
        ]
        self.snapshot = Snapshot.take(watched)
        self.applied: Variant | None = None

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

    def _run_script(self, command: str, variant: Variant) -> tuple[bool, str]:
        result = run_command(
            command,
            cwd=self.experiment.path,
            env=self.script_env(variant),
            timeout_s=self.settings.script_timeout_seconds,
        )
        return result.ok, result.describe()

    def apply(self, variant: Variant) -> None:
        """Apply ``variant`` and prove it is live; raise ``ApplyFailed`` when the
        command fails, changes no watched file, or nginx did not take it up."""
        phase = self.store.start_phase(self.run_id, "apply", variant.name)
        self.observer.phase("apply", variant.name, 0)
        self.applied = variant
        before = self.target.watch.snapshot()
        ok, described = self._run_script(variant.apply, variant)
        problem = None if ok else f"applying {variant.name!r} failed: {described}"
        if problem is None and not self.snapshot.changed():
            watched = ", ".join(str(path) for path in self.snapshot.files)
            problem = (
                f"`{variant.apply}` exited 0 but changed no watched file "
                f"({watched}); fix the script or declare `touches` in meta.json"
            )
        if problem is None and self.reloads_nginx:
            not_live = self.target.watch.wait_for_reload(
                before, self.settings.reload_timeout_seconds
            )
            if not_live:
                problem = f"{variant.name!r} is not live: {not_live}"
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
        ok, described = self._run_script(self.experiment.meta.revert, variant)
        left = self.snapshot.changed()
        if left:
            # The revert left bytes behind (or failed): the snapshot is the truth.
            names = ", ".join(str(path) for path in left)
            log.warning("revert left %s changed; restoring the snapshot", names)
            self.snapshot.restore()
            self._reload_checked()
            described = f"{described}; restored {names} from the snapshot"
        elif not ok:
            # Files are right but the reload may not have happened.
            self._reload_checked()
        elif self.reloads_nginx:
            not_live = self.target.watch.wait_for_reload(
                before, self.settings.reload_timeout_seconds
            )
            if not_live:
                log.warning("after revert: %s; reloading again", not_live)
                self._reload_checked()
                described = f"{described}; reloaded again ({not_live})"
        self.applied = None
        self.record(
            lambda: self.store.record_phase(
                self.run_id, "revert", variant.name, "done", described
            )
        )

    def record(self, write: Callable[[], object]) -> None:
        """Write to the database where losing the write must not stop the run's
        safety work; a failure is logged and the run goes on."""
        try:
            write()
        except (sqlite3.Error, StorageError) as exc:
            log.error("could not record in %s: %s", self.store.path, exc)

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

    def probe_config(self, duration_s: float, warmup_s: float) -> ProbeConfig:
        meta = self.experiment.meta
        return ProbeConfig(
            url=self.url,
            rate_rps=self.rate_rps,
            duration_s=duration_s + warmup_s,
            connections=self.settings.probe_connections,
            timeout_s=self.settings.probe_timeout_ms / 1000,
            warmup_s=warmup_s,
            headers=dict(meta.headers),
        )

    @property
    def rate_rps(self) -> float:
        meta_rate = self.experiment.meta.rate_rps
        return meta_rate if meta_rate is not None else self.settings.probe_rate_rps

    @property
    def policy(self) -> dict[str, Any]:
        """The decision policy's keyword arguments, from smart.conf."""
        return {
            "improve_pct": self.settings.improve_pct,
            "max_err_delta_pct": self.settings.max_err_delta_pct,
            "confidence": self.settings.confidence,
            "policy": self.settings.decision_policy,
        }

    def measure(
        self,
        role: str,
        variant: Variant,
        duration_s: float,
        watch: VariantWatch | None = None,
    ) -> tuple[ProbeResult, EarlyStop | None]:
        """Probe one window, storing each second as it arrives. After a reload the
        first SETTLE_SECONDS are measured and stored but not scored: old workers
        finish their keep-alive connections then, and the new ones warm up. With
        a ``watch``, the window ends early on a guardrail trip or a clear answer."""
        name = "baseline" if role == "baseline" else "measure"
        phase = self.store.start_phase(self.run_id, name, variant.name)
        warmup_s = self.settings.warmup_seconds
        if role == "variant":
            warmup_s += self.settings.settle_seconds
        self.observer.phase(name, variant.name, duration_s + warmup_s)
        window_id = self.store.open_window(self.run_id, variant.name, role)
        window_stop = threading.Event()
        early: list[EarlyStop] = []

        def on_samples(
            stats: SecondStats,
            t_s: npt.NDArray[np.float64],
            latencies_ms: npt.NDArray[np.float64],
            statuses: npt.NDArray[np.int16],
        ) -> None:
            if watch is None or early:
                return
            stop = watch.add(stats, t_s, latencies_ms, statuses)
            if stop is not None:
                early.append(stop)
                window_stop.set()

        def on_second(stats: SecondStats) -> None:
            self.store.add_seconds(window_id, [second_row(stats)])
            self.observer.second(role, variant.name, stats)
            if self.stop.is_set():
                window_stop.set()

        result = run_probe(
            self.probe_config(duration_s, warmup_s),
            on_second=on_second,
            stop=window_stop,
            on_samples=on_samples,
        )
        self.check_stop()
        summary = window_summary(result)
        self.store.close_window(window_id, summary, samples_for_store(result))
        self.files.append_seconds(role, variant.name, result)
        log.info(
            "%s %s: %d requests, p50 %.2f ms, p99 %.2f ms, 5xx %.2f%%, %.0f/%.0f req/s",
            role,
            variant.name,
            summary["requests"],
            summary["p50_ms"] or 0,
            summary["p99_ms"] or 0,
            summary["error_pct"] or 0,
            summary["achieved_rps"] or 0,
            summary["intended_rps"] or 0,
        )
        self.store.finish_phase(phase, "done", early[0].kind if early else "")
        return result, (early[0] if early else None)

    def watch_for(self, baseline: ProbeResult) -> VariantWatch:
        """A watch over the next variant window against ``baseline``."""
        base = scored_samples(baseline)
        return VariantWatch(
            baseline=base,
            baseline_conn_errors=base.conn_errors,
            expected_samples=int(self.rate_rps * self.settings.experiment_seconds),
            look_every_s=max(1, round(self.experiment.meta.measure_interval_sec)),
            policy=self.policy,
            sequential=self.settings.decision_policy == "stats",
        )

    def check_stop(self) -> None:
        """Raise ``Interrupted`` if someone asked this run to stop."""
        if self.stop.is_set():
            raise Interrupted("run cancelled; reverted to baseline")

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
        baseline, _ = self.measure(
            "baseline", self.experiment.baseline, settings.baseline_seconds
        )
        results: list[VariantResult] = []
        candidates = self.experiment.candidates
        for index, variant in enumerate(candidates):
            is_last = index == len(candidates) - 1
            self.apply(variant)
            measured, early = self.measure(
                "variant",
                variant,
                settings.experiment_seconds,
                self.watch_for(baseline),
            )
            results.append(self.judge(variant, baseline, measured, early))
            best = _best_keep(results)
            # The last variant, if it is the best KEEP, simply stays live.
            stays = is_last and best is not None and best.variant == variant.name
            if self.manual or not stays:
                with signals_deferred():
                    self.revert()
                if not is_last:
                    self.pause("cooldown", variant, settings.cooldown_seconds)

        best = None if self.manual else _best_keep(results)
        if best is not None and self.applied is None:
            # The winner was not the last variant tried: put it back.
            self.apply(self.experiment.variant(best.variant))
        return results, best.variant if best else None

    def judge(
        self,
        variant: Variant,
        baseline: ProbeResult,
        candidate: ProbeResult,
        early: EarlyStop | None,
    ) -> VariantResult:
        if early is not None:
            result = early.decision
            planned = self.settings.experiment_seconds
            extra = [
                f"{early.kind} stop after {early.after_s} s of a {planned:g} s window"
            ]
        else:
            base = scored_samples(baseline)
            cand = scored_samples(candidate)
            result = decide(
                base.latencies_ms,
                cand.latencies_ms,
                base.errors,
                cand.errors,
                baseline_t_s=base.t_s,
                variant_t_s=cand.t_s,
                **self.policy,
            )
            extra = []
        details = result.to_dict()
        verdict = str(result["decision"])
        reasons = [*result["reasons"], *extra]
        self.store.add_decision(
            self.run_id,
            variant.name,
            verdict,
            policy=self.settings.decision_policy,
            reasons=reasons,
            details=details,
            acted="pending",
        )
        for reason in reasons:
            log.info("%s %s: %s", variant.name, verdict, reason)
        self.observer.decided(variant.name, verdict, reasons)
        effect = details.get("effect") or {}
        ratio = effect.get("ratio") if isinstance(effect, dict) else None
        return VariantResult(variant.name, verdict, reasons, ratio)


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
) -> RunOutcome:
    """Run ``experiment`` once and leave the server on baseline or the kept variant.

    Setting ``stop`` (from another thread) ends the run at the next second of
    measurement or pause: it reverts and raises ``Interrupted``."""
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
        )
    )
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
        results, kept = run.try_variants()
        outcome = "PENDING" if run.manual else _outcome(results, kept)
        store.finish_run(run.run_id, status="done", outcome=outcome, kept_variant=kept)
        journal.clear()
        log.info("run %s: %s, kept %s", run.run_id, outcome, kept or "baseline")
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
        run_dir=run.files.folder,
        dashboard_path=refresh_dashboard(settings, store),
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
        lambda: run.store.finish_run(
            run.run_id, status="failed", outcome=outcome, error=message
        )
    )
    run.record(
        lambda: run.store.add_event(
            "run-failed", message, run_id=run.run_id, level="error"
        )
    )
    refresh_dashboard(run.settings, run.store)


def _mark_acted(store: Store, run_id: str, kept: str | None) -> None:
    with store.db.conn:
        store.db.execute(
            "update decisions set acted = case when variant = ? then 'kept' "
            "else 'reverted' end where run_id = ?",
            [kept, run_id],
        )


def refresh_dashboard(settings: Settings, store: Store) -> Path | None:
    """Rewrite the dashboard; a failure is logged and never fails the run."""
    try:
        return dashboard.write_dashboard(store, settings.www_path)
    except (OSError, sqlite3.Error, jinja2.TemplateError) as exc:
        log.error("dashboard not written to %s: %s", settings.www_path, exc)
        return None
