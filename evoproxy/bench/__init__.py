"""The bench stage. Takes bench files (bit configurations of one model with their measured
accuracy; shipped, or built here by post-training quantization); gives their fixed search /
held-out splits and the ranking of proxies on them (Spearman@topk, EMQ eq. 4; Kendall τ)."""

from .build import build_bench, build_order
from .format import (
    BENCH_FORMAT,
    SPLITS,
    Bench,
    Entry,
    append_entries,
    describe,
    expand,
    is_held_out,
    load_bench,
    read_bench_file,
    sample_configs,
    shipped_benches,
    write_header,
)
from .metrics import TOPK, paired_bootstrap, partial_spearman, rank_quality, rho_mean, spearman_at_topk
from .rank import (
    TABLE_COLUMNS,
    TABLE_HEADERS,
    RankResult,
    bench_model,
    bench_stats,
    best_handcrafted,
    check_draws,
    plot_ranking,
    rank_proxy,
    subsets,
)

__all__ = [
    "BENCH_FORMAT",
    "SPLITS",
    "TABLE_COLUMNS",
    "TABLE_HEADERS",
    "TOPK",
    "Bench",
    "Entry",
    "RankResult",
    "append_entries",
    "bench_model",
    "bench_stats",
    "best_handcrafted",
    "build_bench",
    "build_order",
    "check_draws",
    "describe",
    "expand",
    "is_held_out",
    "load_bench",
    "paired_bootstrap",
    "partial_spearman",
    "plot_ranking",
    "rank_proxy",
    "rank_quality",
    "read_bench_file",
    "rho_mean",
    "sample_configs",
    "shipped_benches",
    "spearman_at_topk",
    "subsets",
    "write_header",
]
