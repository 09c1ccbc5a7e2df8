"""Evaluation of pdae-bench: metrics, FID statistics, metric backends (docs/protocol.md §5.10).

Import submodules explicitly (``from eval import metrics``); the package name shadows the builtin
``eval``, so never write ``import eval``.
"""
