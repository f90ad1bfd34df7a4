"""Rule report_resolutions: cluster counts and agreement between Leiden resolutions."""

import pandas as pd

from mscflow import job
from mscflow.cluster.plots import resolution_comparison
from mscflow.plotting import save

smk = snakemake  # noqa: F821
log = job.start(smk)
agreement = pd.read_csv(smk.input.agreement, sep="\t")
log.info("%d resolution pairs", len(agreement))
save(resolution_comparison(agreement), smk.output.figure)
