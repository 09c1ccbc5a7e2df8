# Tables (tidy CSV -> seed aggregates -> Markdown/LaTeX, the paper's numbers beside ours), the claims
# table, and every figure as a report() output.

TABLES = ["recon", "gap", "uncond", "fewshot", "truncation", "manipulation", "interpolation", "probe",
          "efficiency", "ablation"]
FIRST_SEED = SEEDS[0]
FIRST_ABLATION_SEED = ABLATION_SEEDS[0]


def all_record_files(wildcards=None):
    return [f for d in DATASETS for f in record_files(d)]


def table_outputs():
    return [f"results/tables/{t}.{ext}" for t in TABLES for ext in ("csv", "md")] + [
        "results/tables/claims.csv", "results/tables/claims.md"]


rule make_tables:
    input:
        all_record_files,
    output:
        **{f"{t}_csv": report(f"results/tables/{t}.csv", caption=f"../report/table_{t}.rst", category="Tables")
           for t in TABLES},
        **{f"{t}_md": f"results/tables/{t}.md" for t in TABLES},
        **{f"{t}_tex": f"results/tables/{t}.tex" for t in TABLES},
        **{f"{t}_rows": f"results/tables/{t}_rows.csv" for t in TABLES},
    log:
        "logs/make_tables.log",
    shell:
        "{PY} -m eval tables --records {input} --out-dir results/tables > {log} 2>&1"


rule make_claims:
    input:
        all_record_files,
    output:
        csv=report("results/tables/claims.csv", caption="../report/claims.rst", category="Claims"),
        md="results/tables/claims.md",
    log:
        "logs/make_claims.log",
    shell:
        "{PY} -m eval claims --records {input} --out-dir results/tables > {log} 2>&1"


# kind -> (inputs for one dataset, caption)
def plot_inputs(dataset, kind):
    s, a = FIRST_SEED, FIRST_ABLATION_SEED
    seeds = SEEDS
    return {
        "gap": [f"results/{dataset}/gap/seed{x}.json" for x in seeds],
        "recon": [f"results/{dataset}/{m}/seed{s}/eval/recon.npz" for m in ("pdae", "diffae", "ddim")],
        "denoise": [f"results/{dataset}/pdae/seed{s}/eval/denoise.npz"],
        "g": [f"results/{dataset}/pdae/seed{s}/eval/shift.npz"],
        "interpolation": [f"results/{dataset}/{m}/seed{s}/eval/interpolation.npz" for m in AUTOENCODERS],
        "manipulation": [f"results/{dataset}/{m}/seed{s}/eval/manipulation.npz" for m in AUTOENCODERS]
        + [f"results/{dataset}/{m}/seed{x}/eval/manipulation.json" for m in AUTOENCODERS for x in seeds],
        "truncation": [f"results/{dataset}/pdae_class/seed{a}/eval/truncation.npz"]
        + [f"results/{dataset}/pdae_class/seed{x}/eval/truncation.json" for x in ABLATION_SEEDS],
        "efficiency": [f"results/{dataset}/efficiency.json"],
        "samples": [f"results/{dataset}/{m}/seed{s}/eval/uncond.npz" for m in ("pdae", "diffae", "ddim")],
        "fewshot": [f"results/{dataset}/{m}/seed{x}/eval/fewshot_{sc}.json"
                    for m in AUTOENCODERS for x in seeds for sc in ("binary", "pu")],
        "uncond": [f"results/{dataset}/{m}/seed{x}/eval/uncond.json" for m in ("pdae", "diffae", "ddim") for x in seeds],
    }[kind]


PLOT_KINDS = ["gap", "recon", "denoise", "g", "interpolation", "manipulation", "truncation", "efficiency", "samples",
              "fewshot", "uncond"]


def plot_outputs():
    return [f"results/plots/{kind}_{d}.png" for d in DATASETS for kind in PLOT_KINDS]


rule plot_figure:
    input:
        lambda wc: plot_inputs(wc.dataset, wc.kind),
    output:
        png=report("results/plots/{kind}_{dataset}.png", caption="../report/plot_{kind}.rst", category="Figures",
                   subcategory="{dataset}", labels={"figure": "{kind}", "dataset": "{dataset}"}),
    wildcard_constraints:
        kind="|".join(PLOT_KINDS),
    log:
        "logs/{dataset}/plot_{kind}.log",
    shell:
        "{PY} -m eval plots --kind {wildcards.kind} --inputs {input} --out {output.png} > {log} 2>&1"
