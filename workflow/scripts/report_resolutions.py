"""Rule report_resolutions: cluster counts and agreement between Leiden resolutions."""

import pandas as pd

from mscflow.plotting import resolution_comparison, save
from mscflow.workflow import setup_logging

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
agreement = pd.read_csv(smk.input.agreement, sep="\t")
log.info("%d resolution pairs", len(agreement))
save(resolution_comparison(agreement), smk.output.figure)
