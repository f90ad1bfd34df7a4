"""Values bound for Snakemake's report.html, in forms that cannot carry markup.

Snakemake writes every report item's labels and its job's params into one JSON object inside
a ``<script>`` element, unescaped: a condition such as ``</script><script>...`` in the sample
sheet would end that element and run as script when the report is opened. So:

* :func:`report_json` gives a rule's params as JSON text with ``<``, ``>``, ``&`` and ``'``
  (and everything outside ASCII) written as ``\\uXXXX`` escapes: the report shows it as text,
  the job reads it back exactly with :func:`json.loads`, and a change still reruns the job.
* :func:`report_label` gives a label shown in the report's tables: the text as written when it
  holds no markup, control or bidirectional characters, else its file-name-safe form.
"""

from __future__ import annotations

import json
import re
from typing import Any

from mscflow.report.overview import file_safe_name

_HTML_SIGNIFICANT = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "'": "\\u0027"}
# markup, quotes, C0/C1 controls, and the bidirectional marks and overrides (U+200E/F,
# U+202A-E, U+2066-9) that make text display differently from what it is
_UNSAFE_LABEL = re.compile("[<>&\"'\\x00-\\x1f\\x7f-\\x9f\\u200e\\u200f\\u202a-\\u202e"
                           "\\u2066-\\u2069]")


def report_json(value: Any) -> str:
    """``value`` as JSON text safe inside an HTML ``<script>`` element (read it back with
    :func:`json.loads`)."""
    text = json.dumps(value, ensure_ascii=True, sort_keys=False)
    return re.sub("[<>&']", lambda m: _HTML_SIGNIFICANT[m.group()], text)


def report_label(text: Any) -> str:
    """A label for the report: ``text`` when it is plain, else its file-name-safe form."""
    text = str(text)
    return file_safe_name(text) if _UNSAFE_LABEL.search(text) else text


__all__ = ["report_json", "report_label"]
