"""The coach against real HTTP servers on 127.0.0.1: a good coach, slow, failing and
lying ones, a fake Ollama and a fake llama.cpp server; what is sent, what is stored,
what advice may change (only an INCONCLUSIVE, only with COACH_MODE=act), and the
time every exchange is allowed to take."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from smart_tui import experiments, outreach
from smart_tui.cli import main
from smart_tui.coach import AdviceRejected, advice_for_run, parse_advice
from smart_tui.coach.local import user_prompt
from smart_tui.experiments import Experiment
from smart_tui.settings import Settings
from smart_tui.storage import Store

TOKEN = "tok-7f3e9a1c-never-shown"
VARIANTS = ["baseline", "fast", "faster"]
Reply = tuple[int, bytes | str | dict[str, Any]]


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeServer:
    """An HTTP server on 127.0.0.1 in a thread. ``respond(seen)`` returns (status,
    body); ``delay_s`` makes it wait first (cut short when the test ends)."""

    respond: Callable[[Seen], Reply]
    delay_s: float = 0.0
    seen: list[Seen] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> FakeServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                seen = Seen(
                    self.path, dict(self.headers.items()), self.rfile.read(length)
                )
                fake.seen.append(seen)
                if fake.stop.wait(fake.delay_s):
                    return
                status, body = fake.respond(seen)
                raw = body if isinstance(body, bytes) else _encode(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the suite's output is for failures."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        serve = self.server.serve_forever
        threading.Thread(target=serve, args=(0.05,), daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


def _encode(body: str | dict[str, Any]) -> bytes:
    return (body if isinstance(body, str) else json.dumps(body)).encode()


@pytest.fixture
def serve() -> Iterator[Callable[..., FakeServer]]:
    started: list[FakeServer] = []

    def make(respond: Callable[[Seen], Reply], delay_s: float = 0.0) -> FakeServer:
        server = FakeServer(respond, delay_s).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.close()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """main() points the smart_tui logger at stderr and stops propagation; later
    tests read logs through caplog, so put the logger back afterwards."""
    logger = logging.getLogger("smart_tui")
    saved = (logger.handlers[:], logger.propagate, logger.level)
    yield
    logger.handlers[:], logger.propagate = saved[0], saved[1]
    logger.setLevel(saved[2])


def answer(
    advice: str, variant: str | None = None, note: str = ""
) -> Callable[[Seen], Reply]:
    body = {"advice": advice, "variant": variant, "note": note}
    return lambda seen: (200, body)


def make_experiment(root: Path) -> Experiment:
    folder = root / "experiments" / "007_demo"
    folder.mkdir(parents=True)
    meta = {
        "id": "007_demo",
        "description": "a demo experiment",
        "variants": [{"name": name, "apply": "true"} for name in VARIANTS],
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    return experiments.load(folder)


def seed_run(
    store: Store, outcome: str = "INCONCLUSIVE", run_id: str = "r1", ratio: float = 0.95
) -> str:
    store.start_run(run_id, "007_demo", trigger="test", pid=1, host="h", settings={})
    summary = {"requests": 3000, "p50_ms": 2.0, "p99_ms": 9.0, "error_pct": 0.0}
    store.add_window(run_id, "baseline", "baseline", summary, [], None)
    store.add_window(run_id, "fast", "variant", {**summary, "p50_ms": 1.9}, [], None)
    details = {
        "effect": {"ratio": ratio, "low": ratio - 0.1, "high": ratio + 0.1},
        "baseline_p50_ms": 2.0,
        "variant_p50_ms": 1.9,
        "baseline_5xx_pct": 0.0,
        "variant_5xx_pct": 0.0,
        "needed_seconds": 900.0,
    }
    verdict = outcome if outcome != "KEEP" else "KEEP"
    store.add_decision(
        run_id,
        "fast",
        verdict,
        policy="stats",
        reasons=["p50 -5% [-15%, +5%]: cannot tell at 95%"],
        details=details,
        acted="kept" if outcome == "KEEP" else "reverted",
    )
    kept = "fast" if outcome == "KEEP" else None
    store.finish_run(run_id, status="done", outcome=outcome, kept_variant=kept)
    return run_id


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Store, Experiment]]:
    store = Store(tmp_path / "var" / "smart.db")
    experiment = make_experiment(tmp_path)
    (tmp_path / "context.md").write_text("Peak traffic is at 18:00; keep p99 low.\n")
    yield store, experiment
    store.close()


def coach_settings(tmp_path: Path, coach_url: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "base_dir": tmp_path,
        "coach_url": coach_url,
        "coach_token": TOKEN,
        "coach_timeout_seconds": 5,
        "coach_connect_timeout_seconds": 1,
        "coach_retries": 0,
    }
    return Settings(**{**values, **extra})


# --- the coach API --------------------------------------------------------------


def test_good_coach_gets_the_document_and_its_advice_is_stored(
    tmp_path: Path, world: tuple[Store, Experiment], serve: Callable[..., FakeServer]
) -> None:
    store, experiment = world
    coach = serve(answer("extend", note="The interval still spans the threshold."))
    settings = coach_settings(tmp_path, coach.url + "/advise")
    run_id = seed_run(store)

    result = outreach.after_run(settings, store, run_id, experiment)

    assert (result.asked, result.why, result.error) == (True, "inconclusive", None)
    assert result.advice is not None and result.advice.status == "ok"
    assert (result.advice.advice, result.advice.source) == ("extend", "api")
    assert result.recommendation is outreach.Recommendation.NONE  # advise mode
    [request] = coach.seen
    assert request.path == "/advise"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    sent = request.json()
    assert (sent["schema"], sent["version"]) == ("smart-tui.coach-request", 1)
    assert sent["experiment"]["variants"] == VARIANTS
    assert sent["run"] | {"id": "r1"} == sent["run"]
    assert sent["run"]["outcome"] == "INCONCLUSIVE"
    assert [w["p50_ms"] for w in sent["windows"]] == [2.0, 1.9]
    assert sent["decisions"][0]["reasons"] == [
        "p50 -5% [-15%, +5%]: cannot tell at 95%"
    ]
    assert sent["decisions"][0]["metrics"]["needed_seconds"] == 900.0
    assert sent["notes"] == "Peak traffic is at 18:00; keep p99 low.\n"
    assert {"cpus", "os", "memory_mb"} <= set(sent["host"])
    assert "h" not in json.dumps(sent["host"]).split('"')  # no host name
    stored = advice_for_run(store, run_id)
    assert stored == result.advice
    assert stored.summary() == (
        "coach: extend: The interval still spans the threshold."
    )


def test_a_coach_that_times_out_costs_at_most_its_deadline(
    tmp_path: Path, world: tuple[Store, Experiment], serve: Callable[..., FakeServer]
) -> None:
    store, experiment = world
    coach = serve(answer("agree"), delay_s=10)
    settings = coach_settings(tmp_path, coach.url, coach_timeout_seconds=1)
    run_id = seed_run(store)

    started = time.monotonic()
    result = outreach.after_run(settings, store, run_id, experiment)
    elapsed_s = time.monotonic() - started

    # The contract: never longer than the coach's deadline plus its grace.
    assert elapsed_s < outreach.max_after_run_seconds(settings)
    assert elapsed_s < 9.0  # far from the coach's 10 s delay
    assert result.advice is not None and result.advice.status == "failed"
    assert "no answer within 1.0 s" in result.advice.reason
    assert advice_for_run(store, run_id) == result.advice


def test_a_failing_coach_is_retried_then_recorded_as_failed(
    tmp_path: Path, world: tuple[Store, Experiment], serve: Callable[..., FakeServer]
) -> None:
    store, experiment = world
    coach = serve(lambda seen: (500, {"error": "boom"}))
    settings = coach_settings(tmp_path, coach.url, coach_retries=2)
    run_id = seed_run(store)

    result = outreach.after_run(settings, store, run_id, experiment)

    assert len(coach.seen) == 3
    assert result.advice is not None and result.advice.status == "failed"
    assert result.advice.reason == (
        f"api coach at http://127.0.0.1:{coach.url.rsplit(':', 1)[1]} answered HTTP 500"
    )


def test_a_coach_that_is_down_fails_fast(
    tmp_path: Path, world: tuple[Store, Experiment], serve: Callable[..., FakeServer]
) -> None:
    store, experiment = world
    gone = serve(answer("agree"))
    gone.close()  # the port is now closed: connection refused
    settings = coach_settings(tmp_path, gone.url, coach_retries=1)

    started = time.monotonic()
    result = outreach.after_run(settings, store, seed_run(store), experiment)

    assert time.monotonic() - started < 2.0
    assert result.advice is not None and result.advice.status == "failed"
    assert "cannot connect" in result.advice.reason


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("<html>oops</html>", "the answer is not JSON"),
        ('["agree"]', "the answer is not a JSON object"),
        ({"advice": "yolo"}, "'advice' must be one of agree, keep, revert, extend"),
        ({"note": "hi"}, "the answer has no 'advice'"),
        (
            {"advice": "try_variant", "variant": "turbo"},
            "the advice names variant 'turbo', which the experiment does not have",
        ),
        ({"advice": "try_variant"}, "try_variant names no variant"),
        (
            {"advice": "try_variant", "variant": "baseline"},
            "try_variant names the baseline",
        ),
        (
            {"advice": "keep", "note": "then run `rm -rf /etc/nginx`"},
            "the note reads like a shell command",
        ),
        (
            {"advice": "agree", "command": "systemctl restart nginx"},
            "the answer carries 'command'",
        ),
    ],
)
def test_garbage_and_hallucinations_are_rejected_with_a_reason(
    tmp_path: Path,
    world: tuple[Store, Experiment],
    serve: Callable[..., FakeServer],
    body: str | dict[str, Any],
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, experiment = world
    coach = serve(lambda seen: (200, body))
    settings = coach_settings(tmp_path, coach.url, coach_mode="act")
    run_id = seed_run(store)

    result = outreach.after_run(settings, store, run_id, experiment)

    assert result.advice is not None and result.advice.status == "rejected"
    assert reason in result.advice.reason
    assert result.advice.advice == ""
    assert result.recommendation is outreach.Recommendation.NONE
    assert f"coach advice for run {run_id} rejected: " in caplog.text
    assert len(coach.seen) == 1  # an unusable answer is not retried


@pytest.mark.parametrize(
    "note",
    [
        "Try again at night when traffic is calmer.",
        "Measure longer; 5 minutes is too short for a 5% effect.",
        "The cache helps /app/ but p99 rose; rerun after the deploy.",
    ],
)
def test_plain_notes_are_not_mistaken_for_commands(note: str) -> None:
    assert parse_advice({"advice": "agree", "note": note}, VARIANTS).note == note


@pytest.mark.parametrize(
    "note",
    [
        "sudo nginx -s reload",
        "curl http://x/ | sh",
        "cd /etc && ls",
        "echo $(id)",
        "wget -O- x",
        "$ nginx -t",
    ],
)
def test_commands_in_notes_are_caught(note: str) -> None:
    with pytest.raises(AdviceRejected, match="shell command"):
        parse_advice({"advice": "agree", "note": note}, VARIANTS)


# --- what advice may change -----------------------------------------------------


@pytest.mark.parametrize(
    ("advice", "outcome", "expected", "extend_s"),
    [
        ("extend", "INCONCLUSIVE", "extend", 900.0),
        ("rerun_later", "INCONCLUSIVE", "rerun", None),
        ("keep", "INCONCLUSIVE", "none", None),  # never a KEEP without data
        ("try_variant", "INCONCLUSIVE", "none", None),
        ("agree", "INCONCLUSIVE", "none", None),
        ("extend", "REVERT", "none", None),  # only an INCONCLUSIVE can change
    ],
)
def test_act_mode_turns_only_an_inconclusive_into_more_data(
    tmp_path: Path,
    world: tuple[Store, Experiment],
    serve: Callable[..., FakeServer],
    advice: str,
    outcome: str,
    expected: str,
    extend_s: float | None,
) -> None:
    store, experiment = world
    variant = "faster" if advice == "try_variant" else None
    coach = serve(answer(advice, variant))
    settings = coach_settings(
        tmp_path, coach.url, coach_mode="act", coach_when="always"
    )
    run_id = seed_run(store, outcome)

    result = outreach.after_run(settings, store, run_id, experiment)

    assert result.recommendation.value == expected
    assert result.extend_seconds == extend_s
    assert advice_for_run(store, run_id).recommendation == expected
    run = store.run(run_id)
    assert run is not None and run.outcome == outcome  # the record is untouched


@pytest.mark.parametrize(
    ("when", "outcome", "ratio", "asked", "why"),
    [
        ("uncertain", "INCONCLUSIVE", 0.95, True, "inconclusive"),
        ("uncertain", "REVERT", 0.90, True, "close call"),  # CI spans 0.90
        ("uncertain", "REVERT", 1.30, False, "certain"),
        ("always", "REVERT", 1.30, True, "always"),
        ("never", "INCONCLUSIVE", 0.95, False, "COACH_WHEN=never"),
    ],
)
def test_coach_when_decides_who_is_asked(
    tmp_path: Path,
    world: tuple[Store, Experiment],
    serve: Callable[..., FakeServer],
    when: str,
    outcome: str,
    ratio: float,
    asked: bool,
    why: str,
) -> None:
    store, experiment = world
    coach = serve(answer("agree"))
    settings = coach_settings(tmp_path, coach.url, coach_when=when)
    run_id = seed_run(store, outcome, ratio=ratio)

    result = outreach.after_run(settings, store, run_id, experiment)

    assert (result.asked, result.why) == (asked, why)
    assert len(coach.seen) == int(asked)
    assert (advice_for_run(store, run_id) is not None) is asked


def test_plain_http_beyond_loopback_is_refused_without_sending(
    tmp_path: Path, world: tuple[Store, Experiment]
) -> None:
    store, experiment = world
    settings = coach_settings(tmp_path, "http://coach.example/advise")

    result = outreach.after_run(settings, store, seed_run(store), experiment)

    assert result.advice is not None and result.advice.status == "failed"
    assert result.advice.reason == (
        "the api coach must use https:// unless its host is loopback "
        "(127.0.0.1, ::1, localhost); http://coach.example is not; fix it in smart.conf"
    )


def test_a_local_model_url_without_a_model_is_recorded_not_raised(
    tmp_path: Path, world: tuple[Store, Experiment]
) -> None:
    store, experiment = world
    settings = coach_settings(tmp_path, "ollama://127.0.0.1:9/")

    result = outreach.after_run(settings, store, seed_run(store), experiment)

    assert result.error is None
    assert result.advice is not None and result.advice.status == "failed"
    assert result.advice.reason.startswith(
        "COACH_URL ollama://127.0.0.1:9 names no model"
    )


def test_proxy_variables_are_ignored_unless_coach_proxy_is_set(
    tmp_path: Path,
    world: tuple[Store, Experiment],
    serve: Callable[..., FakeServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, experiment = world
    coach = serve(answer("agree", note="direct"))
    proxy = serve(answer("agree", note="via proxy"))
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    direct = outreach.after_run(
        coach_settings(tmp_path, coach.url), store, seed_run(store), experiment
    )
    proxied = outreach.after_run(
        coach_settings(tmp_path, coach.url, coach_proxy=proxy.url),
        store,
        seed_run(store, run_id="r2"),
        experiment,
    )

    assert direct.advice is not None and direct.advice.note == "direct"
    assert proxied.advice is not None and proxied.advice.note == "via proxy"
    assert len(coach.seen) == 1 and len(proxy.seen) == 1
    assert proxy.seen[0].path == coach.url + "/"  # a forward proxy's absolute URI


def test_a_slow_coach_never_holds_up_a_guardrail_rollback(
    tmp_path: Path, world: tuple[Store, Experiment], serve: Callable[..., FakeServer]
) -> None:
    # The runner reverts first, then reports: the rollback is done before any
    # outreach starts, and each outreach call is bounded however slow the far
    # end is.
    store, experiment = world
    coach = serve(answer("agree"), delay_s=30)
    hook = serve(lambda seen: (200, "ok"), delay_s=30)
    settings = coach_settings(
        tmp_path,
        coach.url,
        coach_timeout_seconds=1,
        coach_retries=5,
        webhook_url=hook.url,
        webhook_min_severity="info",
        notify_timeout_seconds=1,
    )
    run_id = seed_run(store)
    timeline: list[tuple[str, float]] = []
    started = time.monotonic()

    timeline.append(("reverted", time.monotonic() - started))
    deliveries = outreach.notify_event(
        settings, "guardrail-rollback", "warning", "p99 tripled; rolled back"
    )
    timeline.append(("notified", time.monotonic() - started))
    result = outreach.after_run(settings, store, run_id, experiment)
    timeline.append(("coached", time.monotonic() - started))

    assert timeline[0][1] < 0.01
    assert timeline[1][1] < settings.notify_timeout_seconds + 0.5
    assert timeline[2][1] - timeline[1][1] < outreach.max_after_run_seconds(settings)
    assert [d.sent for d in deliveries] == [False]
    assert result.advice is not None and result.advice.status == "failed"
    run = store.run(run_id)
    assert run is not None and run.outcome == "INCONCLUSIVE"


# --- local models -------------------------------------------------------------


def test_fake_ollama_gets_a_compact_prompt_and_json_advice_comes_back(
    tmp_path: Path, world: tuple[Store, Experiment], serve: Callable[..., FakeServer]
) -> None:
    store, experiment = world
    content = json.dumps({"advice": "try_variant", "variant": "faster", "note": "ok"})
    ollama = serve(lambda seen: (200, {"message": {"content": content}, "done": True}))
    host = ollama.url.removeprefix("http://")
    settings = coach_settings(tmp_path, f"ollama://{host}/qwen2.5:0.5b")

    result = outreach.after_run(settings, store, seed_run(store), experiment)

    assert result.advice is not None and result.advice.status == "ok"
    assert (result.advice.source, result.advice.advice) == ("ollama", "try_variant")
    assert result.advice.variant == "faster"
    [request] = ollama.seen
    assert request.path == "/api/chat"
    sent = request.json()
    assert (sent["model"], sent["format"], sent["stream"]) == (
        "qwen2.5:0.5b",
        "json",
        False,
    )
    system, user = sent["messages"]
    assert "fast, faster" in system["content"]
    assert "decision fast: INCONCLUSIVE" in user["content"]
    assert "Peak traffic is at 18:00" in user["content"]
    assert len(user["content"]) < 1200


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("Sure! I think you should keep it.", "the answer is not JSON"),
        ('{"advice": "try_variant", "variant": "gzip_11"}', "variant 'gzip_11'"),
        ('{"advice": "agree", "note": "sudo systemctl reload nginx"}', "command"),
    ],
)
def test_fake_ollama_malformed_or_hallucinated_output_is_rejected(
    tmp_path: Path,
    world: tuple[Store, Experiment],
    serve: Callable[..., FakeServer],
    content: str,
    reason: str,
) -> None:
    store, experiment = world
    ollama = serve(lambda seen: (200, {"message": {"content": content}}))
    host = ollama.url.removeprefix("http://")
    settings = coach_settings(tmp_path, f"ollama://{host}/tiny")

    result = outreach.after_run(settings, store, seed_run(store), experiment)

    assert result.advice is not None and result.advice.status == "rejected"
    assert reason in result.advice.reason


def test_openai_compatible_server_like_llama_cpp(
    tmp_path: Path, world: tuple[Store, Experiment], serve: Callable[..., FakeServer]
) -> None:
    store, experiment = world
    content = json.dumps({"advice": "rerun_later", "note": "noisy neighbours"})
    server = serve(lambda seen: (200, {"choices": [{"message": {"content": content}}]}))
    host = server.url.removeprefix("http://")
    settings = coach_settings(tmp_path, f"openai+http://{host}/local-model")

    result = outreach.after_run(settings, store, seed_run(store), experiment)

    assert result.advice is not None
    assert (result.advice.status, result.advice.advice) == ("ok", "rerun_later")
    [request] = server.seen
    assert request.path == "/v1/chat/completions"
    assert request.json()["response_format"] == {"type": "json_object"}
    assert request.json()["model"] == "local-model"


def test_prompt_survives_a_document_with_missing_figures() -> None:
    text = user_prompt({"windows": [{"role": "baseline"}], "decisions": [{}]})
    assert "p50 n/a ms" in text


# --- smart-tui coach test ---------------------------------------------------------


def write_conf(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "smart.conf"
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.mark.usefixtures("restore_logging")
def test_coach_test_prints_the_advice(
    tmp_path: Path,
    serve: Callable[..., FakeServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    coach = serve(answer("agree", note="looks fine"))
    conf = write_conf(tmp_path, f"COACH_URL={coach.url}/advise\nCOACH_TOKEN={TOKEN}\n")

    code = main(["--config", str(conf), "coach", "test"])

    out, err = capsys.readouterr()
    assert code == 0, err
    assert "advice:  agree" in out and "note:    looks fine" in out
    assert coach.seen[0].json()["test"] is True
    assert TOKEN not in out + err


@pytest.mark.usefixtures("restore_logging")
def test_coach_test_fails_with_one_line(
    tmp_path: Path,
    serve: Callable[..., FakeServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    coach = serve(lambda seen: (200, "not json at all"))
    conf = write_conf(tmp_path, f"COACH_URL={coach.url}/\nCOACH_RETRIES=0\n")

    code = main(["--config", str(conf), "coach", "test"])

    _, err = capsys.readouterr()
    assert code == 7
    assert err.strip().splitlines()[-1] == (
        "smart-tui: coach advice rejected: the answer is not JSON (Expecting value)"
    )


@pytest.mark.usefixtures("restore_logging")
def test_coach_test_without_a_coach_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = write_conf(tmp_path, "COACH_URL=\n")
    assert main(["--config", str(conf), "coach", "test"]) == 3
    assert "COACH_URL is empty" in capsys.readouterr().err
