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
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from smart_tui import dashboard
from smart_tui.config import Settings, describe
from smart_tui.decide import decide
from smart_tui.errors import ApplyFailed, RevertFailed, SmartError, TargetUnreachable
from smart_tui.experiments import Experiment, Variant
from smart_tui.lab import Lab
from smart_tui.probe import ProbeConfig, ProbeResult, SecondStats, run_probe
from smart_tui.records import RunFiles, scored_samples, window_summary
from smart_tui.scripts import Nginx, run_command
from smart_tui.snapshot import Snapshot
from smart_tui.storage import Store

log = logging.getLogger("smart_tui.runner")


@dataclass(frozen=True)
class Target:
    """What a run measures and changes."""

    url: str
    nginx: Nginx


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


def resolve_target(settings: Settings) -> Target:
    """The base URL and nginx of this run: smart.conf's, or the running lab's."""
    lab_info = None
    if not (settings.target_url and settings.nginx_conf and settings.nginx_cmd):
        lab_info = Lab(settings.var_path).status()
        if lab_info is None or not lab_info.running:
            raise TargetUnreachable(
                "no target: the lab is not running and TARGET_URL, NGINX_CONF or "
                "NGINX_CMD is empty in smart.conf; run `smart-tui lab start` or set "
                "all three"
            )
    url = settings.target_url or (lab_info.url if lab_info else "")
    if settings.nginx_conf:
        conf = settings.nginx_conf_path or Path(settings.nginx_conf)
    else:
        assert lab_info is not None
        conf = lab_info.nginx_conf
    if settings.nginx_cmd:
        command = shlex.split(settings.nginx_cmd)
    else:
        assert lab_info is not None
        command = list(lab_info.nginx_cmd)
    return Target(url=url, nginx=Nginx(conf=conf, command=command))


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
    ) -> None:
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

    # Scripts

    def _script_env(self, variant: Variant) -> dict[str, str]:
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
            env=self._script_env(variant),
            timeout_s=self.settings.script_timeout_seconds,
        )
        return result.ok, result.describe()

    def apply(self, variant: Variant) -> None:
        """Apply ``variant``; an apply that fails or changes nothing raises."""
        phase = self.store.start_phase(self.run_id, "apply", variant.name)
        self.observer.phase("apply", variant.name, 0)
        self.applied = variant
        ok, described = self._run_script(variant.apply, variant)
        if not ok:
            self.store.finish_phase(phase, "failed", described)
            raise ApplyFailed(
                f"{self.experiment.id}: applying {variant.name!r} failed: {described}"
            )
        if not self.snapshot.changed():
            self.store.finish_phase(phase, "failed", "changed no file")
            watched = ", ".join(str(path) for path in self.snapshot.files)
            raise ApplyFailed(
                f"{self.experiment.id}: `{variant.apply}` exited 0 but changed no "
                f"watched file ({watched}); fix the script or declare `touches` in "
                "meta.json"
            )
        self.store.finish_phase(phase, "done", described)

    def revert(self) -> None:
        """Return to the baseline: the revert command, then proof it worked."""
        variant = self.applied or self.experiment.baseline
        phase = self.store.start_phase(self.run_id, "revert", variant.name)
        self.observer.phase("revert", variant.name, 0)
        ok, described = self._run_script(self.experiment.meta.revert, variant)
        left = self.snapshot.changed()
        if left:
            # The revert left bytes behind (or failed): the snapshot is the truth.
            names = ", ".join(str(path) for path in left)
            log.warning("revert left %s changed; restoring the snapshot", names)
            self.store.add_event(
                "revert-restored",
                f"{described}; restored {names} from the snapshot",
                run_id=self.run_id,
                level="warning",
            )
            self.snapshot.restore()
            self._reload_checked()
        elif not ok:
            # Files are right but the reload may not have happened.
            self._reload_checked()
        self.applied = None
        self.store.finish_phase(phase, "done", described)

    def _reload_checked(self) -> None:
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

    # Measuring

    def measure(self, role: str, variant: Variant, duration_s: float) -> ProbeResult:
        name = "baseline" if role == "baseline" else "measure"
        phase = self.store.start_phase(self.run_id, name, variant.name)
        warmup_s = self.settings.warmup_seconds
        self.observer.phase(name, variant.name, duration_s + warmup_s)
        config = ProbeConfig(
            url=self.url,
            rate_rps=(
                self.experiment.meta.rate_rps
                if self.experiment.meta.rate_rps is not None
                else self.settings.probe_rate_rps
            ),
            duration_s=duration_s + warmup_s,
            connections=self.settings.probe_connections,
            timeout_s=self.settings.probe_timeout_ms / 1000,
            warmup_s=warmup_s,
            headers=dict(self.experiment.meta.headers),
        )

        def on_second(stats: SecondStats) -> None:
            self.observer.second(role, variant.name, stats)

        result = run_probe(config, on_second=on_second)
        summary = window_summary(result)
        self.store.add_window(
            self.run_id,
            variant.name,
            role,
            summary,
            self.files.seconds_for_store(result),
            self.files.samples_for_store(result),
        )
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
        self.store.finish_phase(phase, "done", "")
        return result

    def pause(self, name: str, variant: Variant, seconds: float) -> None:
        if seconds <= 0:
            return
        phase = self.store.start_phase(self.run_id, name, variant.name)
        self.observer.phase(name, variant.name, seconds)
        time.sleep(seconds)
        self.store.finish_phase(phase, "done", "")

    def judge(
        self, variant: Variant, baseline: ProbeResult, candidate: ProbeResult
    ) -> VariantResult:
        base = scored_samples(baseline)
        cand = scored_samples(candidate)
        result = decide(
            base.latencies_ms,
            cand.latencies_ms,
            base.errors,
            cand.errors,
            baseline_t_s=base.t_s,
            variant_t_s=cand.t_s,
            improve_pct=self.settings.improve_pct,
            max_err_delta_pct=self.settings.max_err_delta_pct,
            confidence=self.settings.confidence,
            policy=self.settings.decision_policy,
        )
        details = result.to_dict()
        verdict = str(result["decision"])
        reasons = list(result["reasons"])
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
) -> RunOutcome:
    """Run ``experiment`` once and leave the server on baseline or the kept variant."""
    target = target or resolve_target(settings)
    run = Run(settings, experiment, store, target, observer or Observer(), trigger)
    run.files.open_log()
    run.snapshot.save(run.files.folder / "snapshot")
    store.start_run(
        run.run_id,
        experiment.id,
        trigger=trigger,
        pid=os.getpid(),
        host=socket.gethostname(),
        settings={row.key: row.value_shown for row in describe(settings)},
    )
    log.info("run %s of %s against %s", run.run_id, experiment.id, run.url)

    results: list[VariantResult] = []
    kept: str | None = None
    try:
        baseline = run.measure(
            "baseline", experiment.baseline, settings.baseline_seconds
        )
        candidates = experiment.candidates
        for index, variant in enumerate(candidates):
            run.apply(variant)
            run.pause("settle", variant, settings.settle_seconds)
            measured = run.measure("variant", variant, settings.experiment_seconds)
            results.append(run.judge(variant, baseline, measured))
            best = _best_keep(results)
            is_last = index == len(candidates) - 1
            if not (is_last and best is not None and best.variant == variant.name):
                with signals_deferred():
                    run.revert()
                if not is_last:
                    run.pause("cooldown", variant, settings.cooldown_seconds)
        best = _best_keep(results)
        if best is not None and run.applied is None:
            # The winner was not the last variant tried: put it back.
            run.apply(experiment.variant(best.variant))
        kept = best.variant if best else None
        outcome = _outcome(results, kept)
        store.finish_run(run.run_id, status="done", outcome=outcome, kept_variant=kept)
        log.info("run %s: %s, kept %s", run.run_id, outcome, kept or "baseline")
    except BaseException as exc:
        _abort(run, exc)
        raise
    finally:
        run.files.close_log()
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
    run.store.finish_run(run.run_id, status="failed", outcome=outcome, error=message)
    run.store.add_event("run-failed", message, run_id=run.run_id, level="error")
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
    except OSError as exc:
        log.error("dashboard not written to %s: %s", settings.www_path, exc)
        return None
