"""Shared command-line plumbing: one clear sentence on bad input, no traceback.

Every ``python -m ...`` entry point wraps its ``main`` with :func:`run`: a
:class:`covid_keras.errors.CovidKerasError` (bad input the user can fix) is
printed as ``error: <sentence>`` on stderr with exit status 2; ``--debug``
shows the full traceback instead. Ctrl-C exits with 130 and a short note.
"""

import argparse
import logging
import os
import sys
import warnings

from covid_keras import errors

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def add_common_arguments(parser):
    """Adds ``--debug`` and ``--quiet`` to an argparse parser."""
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show full tracebacks instead of one-sentence errors",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="hide warnings and progress bars",
    )
    return parser


def _format_warning(message, category, filename, lineno, line=None):
    return f"warning: {message}\n"


def _started_as(module_name):
    """Whether this process was started as ``python -m <module_name>``."""
    argv = list(getattr(sys, "orig_argv", []))
    return any(a == "-m" and b == module_name for a, b in zip(argv, argv[1:]))


def _has_nvidia_device():
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidia0")


def _strategy_flag(argv):
    """The value of ``--strategy`` in ``argv`` (``--strategy X`` or ``--strategy=X``), or None."""
    for i, arg in enumerate(argv):
        if arg == "--strategy" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--strategy="):
            return arg.split("=", 1)[1]
    return None


def quiet_tensorflow(module_name):
    """Mutes TensorFlow's start-up lines when a command module runs as a program.

    Command modules call this first, before their imports:
    ``cli.quiet_tensorflow(__name__)``. It acts only when the module is the
    program (``__main__``, or a package started with ``python -m package``;
    not in cache workers, which import the program's module as
    ``__mp_main__`` and should not load TensorFlow), and not with
    ``--debug``. TF 2.21 prints absl start-up lines (oneDNN notice, CPU
    features, "could not find cuda drivers", a cuInit error on GPU-less
    machines) straight to file descriptor 2 before absl logging is
    initialised, so neither ``TF_CPP_MIN_LOG_LEVEL`` nor Python's logging
    holds them back. So fd 2 goes to a temporary file while TensorFlow is
    imported and its devices are listed; what TensorFlow wrote there is
    shown after all when the import fails, or when the machine has an NVIDIA
    device but TensorFlow lists no GPU (broken CUDA libraries: training
    would silently run on the CPU). ``TF_CPP_MIN_LOG_LEVEL`` defaults to 3
    for the rest of the run: with op determinism on (every seeded run)
    TF 2.21 logs a spurious "NodeDef mentions attribute
    use_unbounded_threadpool" error for every input pipeline with a lookup
    table (a stateless lookup streams no faster: benchmarks/slice_pipeline.py); real
    failures arrive as Python exceptions. Set the variable yourself, or pass
    ``--debug``, to see TensorFlow's whole C++ log. With ``--strategy
    mirrored`` or ``multi-worker`` on a machine without an NVIDIA device,
    ``TF_ENABLE_ONEDNN_OPTS`` defaults to 0: oneDNN's CPU convolution fails
    on the empty per-replica batch a short last batch gives some replicas.
    """
    if module_name != "__main__" and not _started_as(module_name):
        return
    if _strategy_flag(sys.argv[1:]) not in (None, "default") and not _has_nvidia_device():
        # TF 2.21's oneDNN CPU convolution fails on an empty batch ("Incompatible shapes: [1,1,1,64] vs.
        # [0,32,32,3]" in the BatchNormalization after it), which a replica gets whenever a partial last
        # batch holds fewer examples than there are replicas; TensorFlow's own kernels handle it.
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    if "--debug" in sys.argv[1:] or "tensorflow" in sys.modules:
        return
    import tempfile

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        gpus, failed = [], True
        try:
            os.dup2(captured.fileno(), 2)
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            failed = False
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if failed or (not gpus and _has_nvidia_device()):
                captured.seek(0)
                sys.stderr.write(captured.read().decode(errors="replace"))
                if not failed:
                    sys.stderr.write("warning: this machine has an NVIDIA device but TensorFlow lists no GPU "
                                     "(its start-up log is above); running on the CPU.\n")
                sys.stderr.flush()


def run(main, argv=None):
    """Runs ``main(argv)`` and turns bad-input errors into one line and exit 2.

    Returns:
        The process exit status (use ``sys.exit(run(main))``).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    if not debug:
        warnings.formatwarning = _format_warning
    if "--quiet" in argv:
        warnings.simplefilter("ignore")
        logging.getLogger().setLevel(logging.ERROR)
    try:
        status = main(argv)
    except errors.CovidKerasError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0 if status is None else int(status)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults and keeps the description's line breaks."""


def _shown(value):
    if value is None:
        return "none"
    if isinstance(value, (tuple, list)):
        return " ".join(map(str, value)) if value else "nothing"
    return str(value)


def _flag_help(param, phantom_when):
    """``help (default: X[, ours: why]; phantom preset: Y)``: the values that will run."""
    parts = [f"default: {_shown(param.default)}"]
    if param.choices and isinstance(param.default, tuple):
        parts.insert(0, f"choices: {', '.join(map(str, param.choices))}")
    if param.ours:
        parts[0] += f" - ours: {param.ours}"
    if param.has_phantom and param.phantom != param.default and phantom_when:
        parts.append(f"{phantom_when}: {_shown(param.phantom)}")
    text = param.help + f" ({'; '.join(parts)})"
    return text.replace("%", "%%")


#: How ``--help`` introduces the phantom preset's value of a flag.
PHANTOM_WHEN = "without --data, phantom preset"


def add_recipe_arguments(parser, recipe, phantom_when=PHANTOM_WHEN):
    """Adds one flag per setting of ``recipe`` (:meth:`Recipe.all_params`).

    Defaults are not set on the parser (argparse.SUPPRESS), so
    :func:`config_from_args` can tell what the user typed from what the
    phantom preset or the recipe supplies; the help shows both values.
    Booleans get ``--x`` / ``--no-x``; tuples take several values; ``none``
    means None for optional strings; ``choices`` are checked by argparse.
    """
    for param in recipe.all_params():
        help_text = _flag_help(param, phantom_when)
        common = {"dest": param.name, "default": argparse.SUPPRESS, "help": help_text}
        if param.type is bool:
            parser.add_argument(param.option, action=argparse.BooleanOptionalAction, **common)
            continue
        extra = {"choices": param.choices} if param.choices else {}
        if isinstance(param.default, tuple):  # several values; 'none' is not None here
            kind = param.kind or (type(param.default[0]) if param.default else str)
            parser.add_argument(param.option, nargs="+", type=kind, metavar=param.name.upper(), **extra, **common)
        else:
            # A flag whose choices include "none" takes it as a word, not as None (--class-weights none).
            kind = param.type if param.choices and "none" in param.choices else _none_or(param.type)
            parser.add_argument(param.option, type=kind, **extra, **common)
    return parser


def _none_or(kind):
    def convert(text):
        if kind is str and text.lower() == "none":
            return None
        return kind(text)

    convert.__name__ = kind.__name__
    return convert


def config_from_args(config_cls, args, preset=None):
    """The config: the recipe's defaults, then ``preset``, then what the user typed."""
    import dataclasses

    values = {f.name: f.default for f in dataclasses.fields(config_cls)}
    values.update(preset or {})
    values.update({k: v for k, v in vars(args).items() if k in values})
    return config_cls(**values)


def recipe_parser(prog, description, recipe, phantom=False):
    """The parser of a training command: one flag per setting of ``recipe`` and ``--debug``.

    A command with flags of its own (``train.transfer --model``) adds them
    to it before :func:`parse_recipe_args`.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_arguments(parser, recipe, PHANTOM_WHEN if phantom else None)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-sentence errors")
    return parser


def parse_recipe_args(parser, argv, config_cls, phantom=False):
    """``(config, args)`` from ``parser``: the config as :func:`parse_recipe` makes it, and every flag parsed."""
    args = parser.parse_args(argv)
    preset = config_cls.recipe.phantom_preset() if phantom and getattr(args, "data", None) is None else None
    return config_from_args(config_cls, args, preset), args


def parse_recipe(argv, prog, description, config_cls, phantom=False):
    """A training command's config from its recipe: one flag per setting, ``--debug``.

    Args:
        argv: the arguments (None: ``sys.argv[1:]``).
        prog, description: for ``--help``.
        config_cls: :func:`covid_keras.recipes.config_class` of the recipe.
        phantom: apply the recipe's phantom preset when no ``--data`` is
            given (under whatever the user typed); ``--help`` shows its
            values beside the paper's.
    """
    parser = recipe_parser(prog, description, config_cls.recipe, phantom)
    return parse_recipe_args(parser, argv, config_cls, phantom)[0]
