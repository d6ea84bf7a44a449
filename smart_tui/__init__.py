"""smart-tui: run performance experiments on a live web server and keep what the
evidence supports. The core modules here never import Textual; the TUI and the
headless ``--run-once`` command are two thin front ends over them."""

__version__ = "0.1.0"
