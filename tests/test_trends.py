"""Baseline trends (series, the "worse than recent history" flag, chart maths) and
the Prometheus textfile built from the same record."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from smart_tui import metrics, trends
from smart_tui.settings import Settings
from smart_tui.storage import Store
from smart_tui.trends import TrendPoint


def points(p50s: list[float | None], error_pct: float = 0.0) -> list[TrendPoint]:
    return [
        TrendPoint(
            f"r{i}", f"2024-01-{i + 1:02d}T03:00:00+00:00", p50, 2 * (p50 or 0), 0
        )
        if p50 is not None
        else TrendPoint(f"r{i}", "", None, None, error_pct)
        for i, p50 in enumerate(p50s)
    ]


def test_a_baseline_is_worse_only_above_all_recent_runs_and_the_margin() -> None:
    steady = [10.0, 11.0, 10.5, 9.8, 10.2]

    worse = trends.worse_than_history(points([*steady, 14.0]), "p50_ms")
    noisy = trends.worse_than_history(points([*steady, 11.5]), "p50_ms")
    above_max_small = trends.worse_than_history(points([*steady, 12.0]), "p50_ms")
    better = trends.worse_than_history(points([*steady, 5.0]), "p50_ms")

    assert worse is not None
    assert (worse.latest, worse.typical, worse.history_runs) == (14.0, 10.2, 5)
    assert worse.describe() == (
        "baseline p50 14.00 ms is worse than each of the last 5 runs (median 10.20 ms)"
    )
    assert noisy is None and above_max_small is None and better is None


def test_no_flag_without_enough_history_or_on_sub_floor_changes() -> None:
    assert trends.worse_than_history(points([10.0, 10.0, 30.0]), "p50_ms") is None
    assert trends.worse_than_history([], "p50_ms") is None
    # 0.1 ms -> 0.3 ms triples but stays under the 0.5 ms floor: loopback noise.
    assert trends.worse_than_history(points([0.1] * 5 + [0.3]), "p50_ms") is None
    # Missing figures are skipped, not read as zero.
    gappy = points([10.0, None, 10.0, None, 10.0, 10.0, 20.0])
    assert trends.worse_than_history(gappy, "p50_ms") is not None


def test_regressions_cover_p50_p95_and_5xx() -> None:
    history = [TrendPoint(f"r{i}", "", 10.0, 20.0, 0.0) for i in range(6)]
    latest = TrendPoint("new", "", 10.0, 40.0, 3.0)

    flagged = trends.regressions([*history, latest])

    assert [item.metric for item in flagged] == ["p95_ms", "error_pct"]
    assert flagged[1].describe().startswith("baseline 5xx 3.00% is worse")


@pytest.mark.parametrize(
    ("value", "ceiling"),
    [(0, 1.0), (0.3, 0.5), (1, 1.0), (1.01, 2.0), (2.2, 2.5), (7, 10.0), (101, 200.0)],
)
def test_nice_ceiling(value: float, ceiling: float) -> None:
    assert trends.nice_ceiling(value) == pytest.approx(ceiling)


def test_scale_points_and_svg_path() -> None:
    segments = trends.scale_points(
        [0.0, 5.0, None, 10.0, 20.0], width=108, height=58, top=10.0
    )

    # x spreads over 4 px padding; y is flipped and values above top are clipped.
    assert segments == [[(4.0, 54.0), (29.0, 29.0)], [(79.0, 4.0), (104.0, 4.0)]]
    assert trends.svg_path(segments) == "M4 54 L29 29 M79 4 L104 4"
    lone = trends.scale_points([3.0], width=100, height=50, top=5.0)
    assert trends.svg_path(lone) == "M50 20.8 L50 20.8"
    assert trends.scale_points([], width=100, height=50, top=5.0) == []
    assert trends.y_top([[0.2, None], [0.7]]) == 1.0


def seeded(path: Path) -> Store:
    store = Store(path)
    for index, p50 in enumerate([10.0, 10.4, 9.9, 10.1, 30.0]):
        run_id = f"2024010{index}-002"
        store.start_run(
            run_id, "002_proxy_cache", trigger="t", pid=1, host="h", settings={}
        )
        base = {"p50_ms": p50, "p95_ms": 2 * p50, "p99_ms": 3 * p50, "error_pct": 0.0}
        store.add_window(run_id, "baseline", "baseline", base, [])
        store.add_window(
            run_id,
            'cache "on"',
            "variant",
            {**base, "p50_ms": 1.5, "error_pct": 2.0},
            [],
        )
        store.finish_run(run_id, status="done", outcome="KEEP", kept_variant="cache_on")
        with store.db.conn:
            store.db.execute(
                "update runs set started_at = ?, finished_at = ? where id = ?",
                [
                    f"2024-01-0{index + 1}T03:00:00+00:00",
                    f"2024-01-0{index + 1}T03:01:30+00:00",
                    run_id,
                ],
            )
    store.start_run(
        "r-other", "001_nginx_workers", trigger="t", pid=1, host="h", settings={}
    )
    store.add_window("r-other", "baseline", "baseline", {"p50_ms": 1.0}, [])
    store.finish_run("r-other", status="failed", outcome="APPLY_FAILED")
    return store


def test_read_series_is_per_experiment_oldest_first(tmp_path: Path) -> None:
    store = seeded(tmp_path / "smart.db")

    series = trends.read_series(store)

    assert list(series) == ["001_nginx_workers", "002_proxy_cache"]
    assert [p.p50_ms for p in series["002_proxy_cache"]] == [
        10.0,
        10.4,
        9.9,
        10.1,
        30.0,
    ]
    assert trends.regressions(series["002_proxy_cache"])[0].metric == "p50_ms"


def test_textfile_holds_the_latest_run_per_experiment(tmp_path: Path) -> None:
    store = seeded(tmp_path / "smart.db")
    settings = Settings(base_dir=tmp_path, metrics_path="prom/smart.prom")

    path = metrics.write_textfile(settings, store)

    assert path == tmp_path / "prom" / "smart.prom"
    text = path.read_text()
    lines = text.splitlines()
    assert "# TYPE smart_last_decision gauge" in lines
    assert 'smart_last_decision{experiment="002_proxy_cache",outcome="KEEP"} 1' in lines
    assert (
        'smart_last_decision{experiment="002_proxy_cache",outcome="REVERT"} 0' in lines
    )
    assert (
        'smart_last_decision{experiment="001_nginx_workers",outcome="APPLY_FAILED"} 1'
        in lines
    )
    assert 'smart_last_run_duration_seconds{experiment="002_proxy_cache"} 90' in lines
    assert 'smart_baseline_p50_seconds{experiment="002_proxy_cache"} 0.03' in lines
    assert 'smart_baseline_p99_seconds{experiment="002_proxy_cache"} 0.09' in lines
    assert 'smart_baseline_5xx_ratio{experiment="002_proxy_cache"} 0' in lines
    assert (
        "smart_variant_p50_seconds"
        '{experiment="002_proxy_cache",variant="cache \\"on\\""} 0.0015' in lines
    )
    assert (
        'smart_variant_5xx_ratio{experiment="002_proxy_cache",variant="cache \\"on\\""}'
        " 0.02" in lines
    )
    assert (
        'smart_baseline_worse{experiment="002_proxy_cache",metric="p50_ms"} 1' in lines
    )
    assert "smart_queue_length 0" in lines
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    # Atomic: nothing but the finished file is left in the folder.
    assert os.listdir(path.parent) == ["smart.prom"]
    # Every sample line belongs to a family announced by HELP and TYPE.
    families = {line.split()[2] for line in lines if line.startswith("# TYPE")}
    assert {
        line.split("{")[0].split()[0] for line in lines if line[0] != "#"
    } <= families


def test_textfile_is_off_by_default_and_a_bad_folder_never_fails(
    tmp_path: Path,
) -> None:
    store = seeded(tmp_path / "smart.db")
    (tmp_path / "file").write_text("")

    assert metrics.write_textfile(Settings(base_dir=tmp_path), store) is None
    blocked = Settings(base_dir=tmp_path, metrics_path="file/smart.prom")
    assert metrics.write_textfile(blocked, store) is None


def test_label_escaping() -> None:
    assert metrics.escape_label('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
