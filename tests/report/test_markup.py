"""Values bound for report.html: params as markup-free JSON that reads back exactly, labels
that cannot carry markup."""

from __future__ import annotations

import json

import pytest

from mscflow.report.markup import report_json, report_label

HOSTILE = ["</script><script>alert(1)</script>", "a & b", "it's", 'say "x"', "<!--",
           "\u202eRTL", "caf\u00e9", "MSC\u2028x"]


@pytest.mark.parametrize("text", HOSTILE)
def test_report_json_reads_back_exactly_and_holds_no_markup(text: str) -> None:
    value = [{"name": "c1", "condition": text, "nested": {"x": [text, 1, 0.5, None, True]}}]
    encoded = report_json(value)
    assert json.loads(encoded) == value
    assert not set(encoded) & set("<>&'") and encoded.isascii()


def test_report_label_keeps_plain_names_and_makes_others_file_safe() -> None:
    assert report_label("apoptotic_MSC") == "apoptotic_MSC"
    assert report_label("MSC day 3") == "MSC day 3"
    for text in HOSTILE[:6]:
        label = report_label(text)
        assert not set(label) & set("<>&'\"\u202e"), label
    assert report_label("<b>MSC</b>") == "b_MSC_b"
