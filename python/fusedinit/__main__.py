"""Command line: `python -m fusedinit bench [options]` and `python -m fusedinit init-model CONFIG`."""
import sys

from .cli.errors import Parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = Parser(prog="python -m fusedinit")
    parser.add_argument("command", choices=["bench", "init-model"],
                        help="bench: fusedinit vs torch (the main job); init-model: build a "
                             "transformers model with fusedinit.from_config")
    args, rest = parser.parse_known_args(argv[:1])
    if args.command == "bench":
        from .cli.bench import main as bench_main

        return bench_main(argv[1:], prog="python -m fusedinit bench")
    if args.command == "init-model":
        from .cli.init_model import main as init_model_main

        return init_model_main(argv[1:], prog="python -m fusedinit init-model")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
