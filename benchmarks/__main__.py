"""``python -m benchmarks run [--quick] [--only NAME]``, ``python -m benchmarks tables``, ``... profile``, ``... tokens``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.measure import HERE
from benchmarks.runner import main
from benchmarks.tables import write_readme

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the scenarios, write results/latest.json and the README tables")
    run.add_argument(
        "--quick", action="store_true", help="small sizes and one counted round (CI; figures not meaningful)"
    )
    run.add_argument("--only", action="append", default=[], metavar="NAME", help="run this scenario only (repeatable)")
    run.add_argument(
        "--output", help="results file (default: benchmarks/results/latest.json, or quick.json with --quick)"
    )
    run.add_argument(
        "--work", help="scratch folder for jobs, reports and logs (default: benchmarks/work, emptied first)"
    )
    run.add_argument("--no-readme", action="store_true", help="do not rewrite the tables in benchmarks/README.md")
    tables = commands.add_parser("tables", help="rewrite the README tables from a results file")
    tables.add_argument("--results", default=str(HERE / "results" / "latest.json"))
    prof = commands.add_parser("profile", help="profile bulkconn run in the overhead scenario with py-spy")
    prof.add_argument("--batch-size", type=int, default=20)
    prof.add_argument("--ops", type=int, default=20_000)
    prof.add_argument("--all-threads", action="store_true", help="sample every busy thread, not only the GIL holder")
    tokens = commands.add_parser("tokens", help="CPU of fetching every tenant's token at once, by call gate size")
    tokens.add_argument("--tenants", type=int, default=50)
    tokens.add_argument("--rounds", type=int, default=7)
    tokens.add_argument("--starts", default="8,128", help="gate sizes to compare, comma-separated")
    args = parser.parse_args()
    if args.command == "tables":
        write_readme(json.loads(Path(args.results).read_text()), HERE / "README.md")
        sys.exit(0)
    if args.command == "tokens":
        from benchmarks.tokens import main as token_cost

        sys.exit(token_cost(args.tenants, args.rounds, [int(x) for x in args.starts.split(",")]))
    if args.command == "profile":
        from benchmarks.profile import main as profile

        sys.exit(profile(args.batch_size, args.ops, gil_only=not args.all_threads))
    sys.exit(main(quick=args.quick, only=args.only, output=args.output, work=args.work, readme=not args.no_readme))
