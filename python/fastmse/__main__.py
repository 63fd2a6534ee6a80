"""Command line: ``python -m fastmse info``, ``bench`` and ``eval``."""

from __future__ import annotations

import argparse
import sys


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        msg = f"must be at least 1, not {value}"
        raise argparse.ArgumentTypeError(msg)
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastmse", description="fastmse: fast, exact MSE.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="print the backend, build and thread count")
    bench = commands.add_parser("bench", help="time fastmse against NumPy, Numba, PyTorch and the memory ceiling")
    bench.add_argument("--size", type=_positive, default=None, help="elements per input (default 2**25; GPU 2**28)")
    bench.add_argument(
        "--device", choices=["cpu", "gpu"], default="cpu", help="NumPy arrays, or CuPy arrays on the GPU"
    )
    bench.add_argument("--dtype", choices=["float32", "float64", "float16"], default="float32")
    bench.add_argument("--repeat", type=_positive, default=9, help="timed rounds (median reported)")
    bench.add_argument("--threads", type=_positive, default=None, help="threads (default: OpenMP's)")
    bench.add_argument("--json", dest="json_path", default=None, help="also write the figures to this file")
    bench.add_argument(
        "--shapes", action="store_true", help="the shape families of training loops (size: elements per shape)"
    )
    evaluate = commands.add_parser(
        "eval", help="the loss of two .npy/.npz arrays, streamed from disk in bounded memory"
    )
    evaluate.add_argument("predictions", metavar="PRED", help="predictions: a .npy file, or file.npz[:NAME]")
    evaluate.add_argument("targets", metavar="TARGET", help="targets, of the same shape")
    evaluate.add_argument("--axis", type=int, action="append", help="an axis to reduce over (repeat for several)")
    evaluate.add_argument("--weights", metavar="W", help="weights: the same shape, or broadcasting along axis 0")
    evaluate.add_argument("--reduction", choices=["mean", "sum"], default="mean")
    evaluate.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = parser.parse_args(argv)

    if args.command == "info":
        from . import show_config

        show_config()
        return 0
    if args.command == "eval":
        from . import _eval

        return _eval.main(args)
    if args.shapes:
        refused = [
            f"{name} {value}"
            for name, value, default in (
                ("--device", args.device, "cpu"),
                ("--dtype", args.dtype, "float32"),
                ("--json", args.json_path, None),
            )
            if value != default
        ]
        if refused:
            parser.error(f"--shapes times its own shapes on the CPU and prints them; it takes no {', '.join(refused)}")
        from . import _bench_shapes

        print(_bench_shapes.run(args.size or 1 << 22, args.repeat, args.threads))
        return 0
    from . import _bench

    return _bench.main(args.size, args.dtype, args.repeat, args.threads, args.json_path, args.device)


if __name__ == "__main__":
    sys.exit(main())
