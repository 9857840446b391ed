"""What the benchmark scripts share: the producer-batching option and the table of medians."""

from __future__ import annotations

import argparse
import statistics

# --producer-batch -> COMM_PRODUCER_MAX_BATCH_SIZE: one record per batch (needed on
# Tansu for table recovery) or Faust's default batching, as on Kafka.
PRODUCER_MAX_BATCH = {"one-record": "1", "default": ""}


def add_producer_batch_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--producer-batch",
        choices=list(PRODUCER_MAX_BATCH),
        default="one-record",
        help="one-record: Tansu-safe (one record per batch); default: Faust's batching, as on Kafka",
    )


def print_medians(column: str, unit: str, results: dict[str, list[float]]) -> dict[str, float]:
    """A markdown table of the median and the runs per row; the medians."""
    medians = {name: statistics.median(values) for name, values in results.items()}
    print(f"| {column} | {unit} (median) | runs |")
    print("|---|---|---|")
    for name, values in results.items():
        print(f"| {name} | {medians[name]:.0f} | {', '.join(f'{v:.0f}' for v in values)} |")
    return medians
