"""How the project's commands report a bad input: one `error: ...` line and exit status 2.

Every error type the project defines (ProfileError, TrainConfigError, DataError,
MethodDataError, RolloutError, AdapterError, TrainingDiverged, ...) already names the
file, field or argument at fault, so its traceback only hides the message; other
exceptions are bugs and keep theirs. `--debug` keeps the traceback for ours too.
Under `accelerate launch` only the main rank prints, so the line appears once.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
PACKAGE = __name__.split(".")[0]  # "helpers"
EXIT_ERROR = 2  # what argparse and the geometry tool exit with on bad input


def add_debug_flag(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add `--debug` (show the full traceback of a project error) to a command's parser."""
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an error instead of one line"
    )
    return parser


def _module_of(cls: type) -> str:
    """The module a class was defined in; `__main__` resolved to its real name under `python -m`."""
    if cls.__module__ == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        return spec.name if spec is not None else "__main__"
    return cls.__module__


def is_project_error(err: BaseException) -> bool:
    """Whether `err` is (a subclass of) an exception type defined in this package."""
    return isinstance(err, Exception) and any(
        _module_of(cls) == PACKAGE or _module_of(cls).startswith(PACKAGE + ".") for cls in type(err).__mro__
    )


def _is_main_rank() -> bool:
    """Rank 0 of a launched job, or a plain process (torchrun/accelerate set RANK)."""
    try:
        return int(os.environ.get("RANK", "0")) == 0
    except ValueError:
        return True


def reports_errors(main: F) -> F:
    """Decorate a command's `main(argv=None, ...)`: project errors become `error: ...` and exit 2.

    The command's parser should call `add_debug_flag`; `--debug` on the command line
    lets the exception (and its traceback) through.
    """

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None, *args: Any, **kwargs: Any) -> Any:
        debug = "--debug" in (sys.argv[1:] if argv is None else list(argv))
        try:
            return main(argv, *args, **kwargs)
        except Exception as err:
            if debug or not is_project_error(err):
                raise
            if _is_main_rank():
                print(f"error: {err}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_ERROR) from None

    return wrapper  # type: ignore[return-value]
