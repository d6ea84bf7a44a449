"""The coach: a remote API or a local model that reads a finished run's results and
answers with advice from a closed set. Advice is stored and shown; it never runs a
command and never changes a revert. ``smart_tui.outreach`` is what the runner calls;
the protocol is documented in ``docs/coach-api.md``."""

from smart_tui.coach.advice import ADVICE_KINDS, Advice, AdviceRejected, parse_advice
from smart_tui.coach.client import CoachAnswer, Endpoint, ask_coach, endpoint_of
from smart_tui.coach.document import build_document, sample_document, uncertainty
from smart_tui.coach.records import StoredAdvice, advice_for_run, advice_for_runs
from smart_tui.coach.wire import Deadline, OutboundError

__all__ = [
    "ADVICE_KINDS",
    "Advice",
    "AdviceRejected",
    "CoachAnswer",
    "Deadline",
    "Endpoint",
    "OutboundError",
    "StoredAdvice",
    "advice_for_run",
    "advice_for_runs",
    "ask_coach",
    "build_document",
    "endpoint_of",
    "parse_advice",
    "sample_document",
    "uncertainty",
]
