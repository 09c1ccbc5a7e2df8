"""pdae-bench: PDAE (Zhang, Zhao and Lin, NeurIPS 2022), Diff-AE and DDIM on one code base."""

__version__ = "0.1.0"
