"""What was tested: rows tested, skipped, not testable and significant per analysis."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from mscflow.contrast.stats import STATUS_NO_TEST, STATUS_SKIPPED, STATUS_TESTED

__all__ = ["contrast_summary"]


def contrast_summary(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per analysis x contrast: rows tested / skipped / no_test / significant, and the
    distinct reasons for untested rows (so the report says when no test was possible).
    Pseudobulk DE counts cell types, the other analyses rows."""
    rows = []
    for analysis, df in tables.items():
        if df.empty:
            continue
        unit = df.drop_duplicates(["contrast", "cell_type"]) if analysis == "pseudobulk_de" \
            else df
        for name, sub in df.groupby("contrast", sort=False):
            u = unit[unit["contrast"] == name]
            untested = sub.loc[sub["status"] != STATUS_TESTED, "note"].astype(str)
            reasons = sorted({r.split(";")[0] for r in untested if r})
            rows.append({
                "analysis": analysis, "contrast": name, "tissue": sub["tissue"].iloc[0],
                "units": "cell types" if analysis == "pseudobulk_de" else "rows",
                "n_tested": int((u["status"] == STATUS_TESTED).sum()),
                "n_skipped": int((u["status"] == STATUS_SKIPPED).sum()),
                "n_no_test": int((u["status"] == STATUS_NO_TEST).sum()),
                "n_significant": int(sub["significant"].sum()),
                "reasons_not_tested": " | ".join(reasons[:5]),
            })
    return pd.DataFrame(rows)
