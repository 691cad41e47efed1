"""``gotrails-otel view``: trails from JSON lines in the terminal (``rich``), as JSON lines, or as one HTML page.

The pieces are usable on their own: :mod:`.source` reads and classifies lines (and follows a growing file across
rotation), :mod:`.model` selects trails and lays out their waterfall, :mod:`.terminal` and :mod:`.html` draw it.
"""

from __future__ import annotations

from .cli import add_arguments, run
from .model import Filters
from .source import Record, Skipped, classify, follow_file

__all__ = ["Filters", "Record", "Skipped", "add_arguments", "classify", "follow_file", "run"]
