# The embedded demo: a seeded generator writes every demo sample and the planted truth.


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
