"""Comparing mechanisms: a baseline and a list of mechanisms, several seeds each, one table.

    plan     CompareConfig, the runs of a comparison and their folders
    local    the local executor (worker processes on this machine)
    costs    the cost pass: every model timed in one process, interleaved
    records  finished runs read back and checked
    report   the table (ComparisonRow, Comparison), Markdown, CSV, JSON, plots
    html     the self-contained results.html
    compare  compare(): plan → executor → costs → report
"""

from .compare import compare
from .costs import measure_costs
from .local import LocalExecutor
from .plan import CompareConfig, Failure, RunPlan, plan_runs, run_name, split_specs
from .records import BASELINE, RunRecord, collect_runs
from .report import Comparison, ComparisonRow, build_report, markdown, report, write_report

__all__ = [
    "BASELINE",
    "CompareConfig",
    "Comparison",
    "ComparisonRow",
    "Failure",
    "LocalExecutor",
    "RunPlan",
    "RunRecord",
    "build_report",
    "collect_runs",
    "compare",
    "markdown",
    "measure_costs",
    "plan_runs",
    "report",
    "run_name",
    "split_specs",
    "write_report",
]
