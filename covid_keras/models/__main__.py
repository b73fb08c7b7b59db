"""List every paper model with its paper, input and parameter count.

    python -m covid_keras.models                  # the table (builds each model, ~1 min on 2 cores)
    python -m covid_keras.models --summary xray_cnn

Models are built with weights=None (nothing is downloaded) at the papers'
input sizes.
"""

import argparse
import sys

# covid_keras/models/__init__.py, imported before this module, has already
# muted TensorFlow's start-up lines (cli.quiet_tensorflow).
from covid_keras import cli, errors
from covid_keras.models.registry import MODELS


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m covid_keras.models", description=__doc__,
                                     formatter_class=cli.HelpFormatter)
    parser.add_argument("--summary", metavar="NAME", help=f"print the Keras summary of one model: {', '.join(MODELS)}")
    parser.add_argument("--no-params", action="store_true", help="list without building (no parameter counts)")
    cli.add_common_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.summary:
        if args.summary not in MODELS:
            raise errors.ConfigurationError(
                f"Unknown model {args.summary!r}; use one of {', '.join(MODELS)} with --summary."
            )
        MODELS[args.summary].build().summary()
        return 0
    rows = [("model", "paper", "input", "parameters")]
    for name, spec in MODELS.items():
        params = "-" if args.no_params else f"{spec.build().count_params():,}"
        rows.append((name, spec.paper, spec.inputs, params))
        if not args.no_params:
            print(f"built {name}", file=sys.stderr)
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
