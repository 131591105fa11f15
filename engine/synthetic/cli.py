"""``hmoe synth``: write (or find in the cache) a synthetic model directory and print its path."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from engine.errors import EngineError
from engine.synthetic.presets import ARCHITECTURES, KINDS

DEFAULT_CACHE_DIR = Path(".cache") / "synthetic"


class _OneLineErrorParser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (exit status 2), without the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _OneLineErrorParser(
        prog="hmoe synth",
        description="Write a synthetic Hugging Face-format MoE model (seeded weights) and print "
        "its directory; an existing complete copy in the cache is reused.",
    )
    p.add_argument("--arch", required=True, choices=ARCHITECTURES)
    p.add_argument("--kind", required=True, choices=KINDS)
    p.add_argument(
        "--layers",
        type=int,
        default=None,
        help="decoder layers (default: 4 for tiny; what fits memory/disk for slice)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--routing-skew",
        type=float,
        default=0.0,
        help="Zipf exponent of expert popularity (0 = no skew)",
    )
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    p.add_argument(
        "--corpus",
        default="auto",
        choices=("auto", "wikitext2", "python_docs", "file"),
        help="text the tokenizer is trained on",
    )
    p.add_argument("--corpus-file", default=None)
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage + the error
        return int(exc.code or 0)
    if args.layers is not None and args.layers < 1:
        print(f"hmoe synth: error: --layers must be >= 1, got {args.layers}", file=sys.stderr)
        return 2
    if args.routing_skew < 0:
        print(
            f"hmoe synth: error: --routing-skew must be >= 0, got {args.routing_skew}",
            file=sys.stderr,
        )
        return 2
    from engine.synthetic import SyntheticRequest, ensure_synthetic_model
    from engine.text_corpus import load_corpus

    try:
        corpus = load_corpus(args.corpus, args.corpus_file)
        req = SyntheticRequest(args.arch, args.kind, args.layers, args.seed, args.routing_skew)
        path = ensure_synthetic_model(
            req, args.cache_dir, progress=not args.no_progress, corpus=corpus
        )
    except EngineError as exc:
        print(f"hmoe synth: error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
