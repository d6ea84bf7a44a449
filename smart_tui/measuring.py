"""Measuring windows and judging them: the half of a run that only observes.

``MeasuringRun`` holds what a run needs to probe the target, store each second as
it arrives, watch a variant window for an early answer, and record the decision;
``runner.Run`` adds the half that changes the server."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from smart_tui.decide import Decision, decide
from smart_tui.errors import Interrupted
from smart_tui.experiments import Experiment, Variant
from smart_tui.probe import ProbeConfig, ProbeResult, SecondStats
from smart_tui.records import (
    RunFiles,
    Samples,
    samples_for_store,
    second_row,
    window_summary,
)
from smart_tui.sequential import EarlyStop, VariantWatch, expected_variant_samples
from smart_tui.settings import Settings
from smart_tui.sources import (
    Aggregates,
    SourceResult,
    aggregate_decision,
    measure_window,
)
from smart_tui.storage import Store
from smart_tui.target import Target

log = logging.getLogger("smart_tui.runner")


@dataclass
class VariantResult:
    """How one candidate variant fared against the baseline."""

    variant: str
    decision: str
    reasons: list[str]
    p50_ratio: float | None = None
    stopped_by: str = ""  # "guardrail" or "sequential" when the window ended early


class Observer:
    """Receives a run's progress; the CLI and the app subclass it. Does nothing."""

    def phase(self, name: str, variant: str | None, duration_s: float) -> None:
        """A phase began; ``duration_s`` is its planned length (0 if unknown)."""

    def second(self, role: str, variant: str, stats: SecondStats) -> None:
        """One second of probe figures arrived."""

    def decided(self, variant: str, decision: str, reasons: list[str]) -> None:
        """A variant was decided."""


class MeasuringRun:
    """The observing half of a run; see ``runner.Run``."""

    settings: Settings
    experiment: Experiment
    store: Store
    observer: Observer
    stop: threading.Event
    run_id: str
    url: str
    files: RunFiles
    target: Target
    # Aggregate-only windows (a script's JSON, wrk) not yet judged, by role.
    aggregate_windows: tuple[tuple[str, Aggregates], ...] = ()

    def script_env(self, variant: Variant) -> dict[str, str]:
        """The variables experiment scripts get; ``runner.Run`` defines them."""
        raise NotImplementedError

    def probe_config(self, duration_s: float, warmup_s: float) -> ProbeConfig:
        meta = self.experiment.meta
        return ProbeConfig(
            url=self.url,
            rate_rps=self.rate_rps,
            duration_s=duration_s,
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
        *,
        washout: bool = False,
    ) -> tuple[ProbeResult, EarlyStop | None]:
        """Probe one window, storing each second as it arrives. After a reload the
        first SETTLE_SECONDS are measured and stored but not scored: old workers
        finish their keep-alive connections then, and the new ones warm up. With
        a ``watch``, the window ends early on a guardrail trip or a clear answer."""
        name = "baseline" if role == "baseline" else "measure"
        phase = self.store.start_phase(self.run_id, name, variant.name)
        warmup_s = self.settings.warmup_seconds
        if role == "variant" or washout:
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

        result = measure_window(
            self.experiment,
            self.probe_config(duration_s, warmup_s),
            env=self.script_env(variant),
            on_second=on_second,
            stop=window_stop,
            on_samples=on_samples,
            # nginx logs access.log beside error.log, in the lab and by default.
            access_log=self.target.watch.error_log.with_name("access.log"),
            script_timeout_s=self.settings.script_timeout_seconds,
        )
        self.check_stop()
        if isinstance(result, SourceResult) and result.aggregates is not None:
            self.aggregate_windows += ((role, result.aggregates),)
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

    def watch_for(self, base: Samples, *, sequential: bool = True) -> VariantWatch:
        """A watch over the next variant window against the baseline's samples;
        ``sequential=False`` keeps only the guardrail."""
        return VariantWatch(
            baseline=base,
            baseline_conn_errors=base.conn_errors,
            expected_samples=expected_variant_samples(
                self.experiment.meta.source,
                self.rate_rps,
                self.settings.experiment_seconds,
                base,
            ),
            look_every_s=max(1, round(self.experiment.meta.measure_interval_sec)),
            policy=self.policy,
            sequential=sequential and self.settings.decision_policy == "stats",
        )

    def seed_on_aggregates(self, base: Samples, cand: Samples) -> Decision | None:
        """The seed rule when a window had only aggregates (``decide`` needs
        samples); None otherwise. Uses up the variant's aggregate windows, and the
        baseline's too when switchback measures a baseline per variant."""
        windows = self.aggregate_windows
        keep_baseline = self.settings.switchback_blocks <= 1
        self.aggregate_windows = tuple(
            (role, figures)
            for role, figures in windows
            if role == "baseline" and keep_baseline
        )
        return aggregate_decision(
            base,
            cand,
            [figures for role, figures in windows if role == "baseline"],
            [figures for role, figures in windows if role == "variant"],
            source=self.experiment.meta.source,
            policy=self.policy,
        )

    def check_stop(self) -> None:
        """Raise ``Interrupted`` if someone asked this run to stop."""
        if self.stop.is_set():
            raise Interrupted("run cancelled; reverted to baseline")

    def judge(
        self,
        variant: Variant,
        base: Samples,
        cand: Samples,
        early: EarlyStop | None,
        note: str = "",
    ) -> VariantResult:
        """Decide ``variant`` from the scored samples (or take the early answer)
        and record the decision with every reason."""
        extra = [note] if note else []
        seed = self.seed_on_aggregates(base, cand)
        if early is not None:
            result = early.decision
            planned = self.settings.experiment_seconds
            extra.append(
                f"{early.kind} stop after {early.after_s} s of a {planned:g} s window"
            )
        elif seed is not None:
            result = seed
        else:
            result = decide(
                base.latencies_ms,
                cand.latencies_ms,
                base.errors,
                cand.errors,
                baseline_t_s=base.t_s,
                variant_t_s=cand.t_s,
                **self.policy,
            )
        details = result.to_dict()
        verdict = str(result["decision"])
        reasons = [*result["reasons"], *extra]
        self.store.add_decision(
            self.run_id,
            variant.name,
            verdict,
            policy="seed" if result is seed else self.settings.decision_policy,
            reasons=reasons,
            details=details,
            acted="pending",
        )
        for reason in reasons:
            log.info("%s %s: %s", variant.name, verdict, reason)
        self.observer.decided(variant.name, verdict, reasons)
        effect = details.get("effect") or {}
        ratio = effect.get("ratio") if isinstance(effect, dict) else None
        return VariantResult(
            variant.name, verdict, reasons, ratio, early.kind if early else ""
        )
