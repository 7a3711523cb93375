"""``python -m fastmix info`` and ``python -m fastmix bench``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastmix")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="versions, the native build and which backends are available")
    bench = commands.add_parser("bench", help="time every op on this machine and write benchmarks/results/")
    bench.add_argument("--quick", action="store_true", help="fewer sizes and repetitions")
    bench.add_argument("--out", default=None, help="output folder (default: benchmarks/results)")
    bench.add_argument("--ops", nargs="+", default=None, metavar="OP",
                       help="time only these ops (e.g. fit_gmm2); the files are named after them")
    args = parser.parse_args(argv)
    if args.command == "info":
        from fastmix._info import format_info, info

        print(format_info(info()))
        return 0
    from fastmix import bench as bench_module

    return bench_module.main(quick=args.quick, out_dir=args.out, ops=args.ops)


if __name__ == "__main__":
    sys.exit(main())
