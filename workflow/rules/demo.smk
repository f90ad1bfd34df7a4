# The embedded demo: a seeded generator writes every demo sample and the planted truth
# (per cell, per gene, per gene set, per ligand-receptor pair; README "The demo").


rule make_demo:
    input:
        programmes=config["genesets"]["programmes"]["mouse"],
        markers=config["genesets"]["markers"]["mouse"],
    output:
        directory(demo_outputs()["mtx"]),
        demo_outputs()["files"],
        sheet=f"{DEMO_DIR}/samples.tsv",
        truth=f"{DEMO_DIR}/truth.tsv.gz",
        planted=f"{DEMO_DIR}/planted_effects.tsv",
        gene_effects=f"{DEMO_DIR}/planted_gene_effects.tsv",
        score_effects=f"{DEMO_DIR}/planted_score_effects.tsv",
        interactions=f"{DEMO_DIR}/planted_interactions.tsv",
        spec=f"{DEMO_DIR}/spec.json",
    params:
        outdir=lambda wc, output: os.path.dirname(output.sheet),
        demo=config["demo"],
    log:
        "logs/make_demo.log",
    benchmark:
        "benchmarks/make_demo.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(2000, 0),
        runtime=scaled_runtime(20, 0),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/make_demo.py"
