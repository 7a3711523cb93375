"""``python -m fastmix info``, ``python -m fastmix bench`` and ``python -m fastmix validate``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastmix")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="versions, the native build, which backends are available, and per op its "
                                     "backends and the default on CPU and CUDA tensors")
    bench = commands.add_parser("bench", help="time every public op against its reference, peers and a copy floor; "
                                              "write JSON, Markdown and PNG reports")
    bench.add_argument("--quick", action="store_true",
                       help="smaller images and GMM data, fewer rounds (the report says what it changed)")
    bench.add_argument("--out", default=None, metavar="DIR",
                       help="output folder, created (default: ./fastmix-bench-results); files are named "
                            "<device>-<YYYYmmdd-HHMMSS>[-quick].json/.md/.png")
    bench.add_argument("--ops", nargs="+", default=None, metavar="OP",
                       help="time only these ops, e.g. fit_gmm2 or Mixup (every Mixup mode) or 'Mixup elem cutmix'")
    bench.add_argument("--system-heap", action="store_true",
                       help="keep glibc's allocator defaults, so outputs of tens of MB are fresh pages each call "
                            "(default on a CPU: a steady heap that reuses them; the report says which)")
    validate = commands.add_parser("validate", help="the first GPU run: GPU tests, sync/graph/compile checks, "
                                                    "benchmarks (CPU-checkable parts only without a GPU)")
    validate.add_argument("--out", default=None, help="output folder (default: benchmarks/results/<gpu>-<time>)")
    args = parser.parse_args(argv)
    if args.command == "info":
        from fastmix._info import format_info, info

        print(format_info(info()))
        return 0
    if args.command == "validate":
        from fastmix import validate as validate_module

        return validate_module.main(out_dir=args.out)
    from fastmix import bench as bench_module

    return bench_module.main(quick=args.quick, out_dir=args.out, ops=args.ops, system_heap=args.system_heap)


if __name__ == "__main__":
    sys.exit(main())
