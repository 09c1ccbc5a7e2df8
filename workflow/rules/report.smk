# Tables (tidy CSV -> seed aggregates -> Markdown/LaTeX/HTML, the paper's numbers beside ours), the claims
# table, and every figure as a report() output.

TABLES = [t for t in ALL_EVALUATIONS if any(enabled(d, t) for d in DATASETS)]
# figure -> the evaluation it draws
PLOT_SOURCE = {"gap": "gap", "recon": "recon", "denoise": "gap", "g": "gap", "interpolation": "interpolation",
               "manipulation": "manipulation", "truncation": "truncation", "efficiency": "efficiency",
               "samples": "uncond", "fewshot": "fewshot", "uncond": "uncond"}
FIRST_SEED = SEEDS[0]
FIRST_FIGURE_SEED = FIGURE_SEEDS[0]
# table -> the name the report lists it under (the paper's table, figure or section it measures)
TABLE_NAMES = {"recon": "Table 1: reconstruction", "uncond": "Table 2: unconditional FID",
               "fewshot": "Table 3: few-shot FID", "gap": "Fig. 1, 5: posterior-mean gap",
               "interpolation": "Fig. 7: interpolation", "manipulation": "Fig. 8: attribute manipulation",
               "truncation": "Fig. 9: truncation-like effect", "efficiency": "§4.1: training efficiency",
               "ablation": "§3.4: loss weighting", "probe": "Linear probe of z (beyond the paper)"}


rule make_tables:
    input:
        all_record_files,
    output:
        **{f"{t}_csv": report(f"results/tables/{t}.csv", caption=f"../report/table_{t}.rst", category="Tables",
                              labels={"table": TABLE_NAMES[t], "format": "CSV (download)"}) for t in TABLES},
        **{f"{t}_html": report(f"results/tables/{t}.html", caption=f"../report/table_{t}.rst", category="Tables",
                               labels={"table": TABLE_NAMES[t], "format": "HTML (read)"}) for t in TABLES},
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
        csv=report("results/tables/claims.csv", caption="../report/claims.rst", category="Claims",
                   labels={"table": "Claims of the paper and verdicts", "format": "CSV (download)"}),
        html=report("results/tables/claims.html", caption="../report/claims.rst", category="Claims",
                    labels={"table": "Claims of the paper and verdicts", "format": "HTML (read)"}),
        md="results/tables/claims.md",
        health_csv=report("results/tables/health.csv", caption="../report/health.rst", category="Claims",
                          labels={"table": "Model health", "format": "CSV (download)"}),
        health_html=report("results/tables/health.html", caption="../report/health.rst", category="Claims",
                           labels={"table": "Model health", "format": "HTML (read)"}),
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
# kind -> the name the report lists it under (the paper's figure or table it regenerates)
FIGURE_NAMES = {"gap": "Fig. 1, 5 right: posterior-mean gap", "recon": "Table 1: reconstructions",
                "denoise": "Fig. 5 left: denoising in one step", "g": "Appendix C.6: mean shift G",
                "interpolation": "Fig. 7: interpolation", "manipulation": "Fig. 8: attribute manipulation",
                "truncation": "Fig. 9: truncation-like effect", "efficiency": "§4.1: training efficiency",
                "samples": "Table 2: unconditional samples", "fewshot": "Table 3: few-shot FID",
                "uncond": "Table 2: FID vs DDIM steps"}


rule plot_figure:
    input:
        lambda wc: plot_inputs(wc.dataset, wc.kind),
    output:
        png=report("results/plots/{kind}_{dataset}.png", caption="../report/plot.rst", category="Figures",
                   subcategory="{dataset}",
                   labels=lambda wc: {"figure": FIGURE_NAMES[wc.kind], "dataset": wc.dataset}),
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
