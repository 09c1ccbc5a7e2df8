# Tables (tidy CSV -> seed aggregates -> Markdown/LaTeX, the paper's numbers beside ours), the claims
# table, and every figure as a report() output.

TABLES = [t for t in ALL_EVALUATIONS if any(enabled(d, t) for d in DATASETS)]
# figure -> the evaluation it draws
PLOT_SOURCE = {"gap": "gap", "recon": "recon", "denoise": "gap", "g": "gap", "interpolation": "interpolation",
               "manipulation": "manipulation", "truncation": "truncation", "efficiency": "efficiency",
               "samples": "uncond", "fewshot": "fewshot", "uncond": "uncond"}
FIRST_SEED = SEEDS[0]
FIRST_FIGURE_SEED = FIGURE_SEEDS[0]


rule make_tables:
    input:
        all_record_files,
    output:
        **{f"{t}_csv": report(f"results/tables/{t}.csv", caption=f"../report/table_{t}.rst", category="Tables")
           for t in TABLES},
        **{f"{t}_md": f"results/tables/{t}.md" for t in TABLES},
        **{f"{t}_tex": f"results/tables/{t}.tex" for t in TABLES},
        **{f"{t}_rows": f"results/tables/{t}_rows.csv" for t in TABLES},
    conda:
        ENV
    log:
        "logs/make_tables.log",
    benchmark:
        "results/benchmarks/make_tables.tsv",
    shell:
        "python -m eval tables --records {input} --out-dir results/tables > {log} 2>&1"


rule make_claims:
    input:
        all_record_files,
    output:
        csv=report("results/tables/claims.csv", caption="../report/claims.rst", category="Claims"),
        md="results/tables/claims.md",
        health_csv=report("results/tables/health.csv", caption="../report/health.rst", category="Claims"),
        health_md="results/tables/health.md",
    conda:
        ENV
    log:
        "logs/make_claims.log",
    benchmark:
        "results/benchmarks/make_claims.tsv",
    shell:
        "python -m eval claims --records {input} --out-dir results/tables > {log} 2>&1"


# kind -> (inputs for one dataset, caption)
PLOT_KINDS = list(PLOT_SOURCE)


rule plot_figure:
    input:
        lambda wc: plot_inputs(wc.dataset, wc.kind),
    output:
        png=report("results/plots/{kind}_{dataset}.png", caption="../report/plot.rst", category="Figures",
                   subcategory="{dataset}", labels={"figure": "{kind}", "dataset": "{dataset}"}),
    wildcard_constraints:
        kind="|".join(PLOT_KINDS),
    conda:
        ENV
    log:
        "logs/{dataset}/plot_{kind}.log",
    benchmark:
        "results/benchmarks/{dataset}/plot_{kind}.tsv",
    shell:
        "python -m eval plots --kind {wildcards.kind} --inputs {input} --out {output.png} > {log} 2>&1"
