"""What both command-line tools share: error reporting and logging set-up."""

from __future__ import annotations

import errno
import importlib
import logging
import os
import sys

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from cellfusion_core.errors import CellfusionError

err_console = Console(stderr=True)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=err_console, show_path=False)], force=True)
    # the libraries' own INFO chatter (Dask's cluster start-up, numba, matplotlib) only with --verbose
    # distributed sets its loggers from Dask's config when it is imported (workers too): tell it there
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "debug" if verbose else "warning")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)


def make_app(help: str) -> typer.Typer:
    """A command-line tool's typer app: ``--help`` when called bare, no shell-completion options, no
    rich tracebacks (:func:`run_main` turns errors into one line), and ``--verbose``/``-v`` on the tool."""
    app = typer.Typer(help=help, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

    @app.callback()
    def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages.")) -> None:
        setup_logging(verbose)

    return app


NOISY_LOGGERS = ("distributed", "dask", "numba", "matplotlib", "PIL", "fsspec", "asyncio", "tornado", "shap")


def _click_types(name: str) -> tuple[type[BaseException], ...]:
    """``name`` (``ClickException``, ``Abort``, ``Exit``) from every click the CLI may raise.

    typer >= 0.2x vendors its own click as ``typer._click`` (its exceptions are not the ``click``
    package's); older typer raises the ``click`` package's. Catch both, whichever is installed.
    """
    found: list[type[BaseException]] = []
    for module in ("typer._click.exceptions", "typer.exceptions", "click.exceptions"):
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        if isinstance(cls, type) and cls not in found:
            found.append(cls)
    return tuple(found)


#: errors of the machine, not of the code: one message and exit status 2 instead of a traceback
_ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "free disk space", errno.EDQUOT: "free space within your disk quota",
    errno.EROFS: "write to a file system that is not read-only", errno.EACCES: "check the permissions",
    errno.EPERM: "check the permissions",
}


def run_main(app: typer.Typer) -> None:
    """Run a typer app; a CellfusionError becomes one red message and exit status 2.

    A usage error (unknown command or option, missing argument) prints the usage line and the
    problem, no traceback, exit status 2 (click's convention).
    """
    try:
        rv = app(standalone_mode=False)
    except CellfusionError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
        sys.exit(2)
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRNOS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        err_console.print(f"[bold red]error:[/] {escape(where)}{escape(exc.strerror or str(exc))}\n  hint: "
                          f"{_ENVIRONMENT_ERRNOS[exc.errno]}; then rerun the same command (finished work is reused)",
                          highlight=False, markup=True)
        sys.exit(2)
    except _click_types("ClickException") as exc:
        exc.show()  # usage + "Error: ..." (NoArgsIsHelpError: the help text)
        sys.exit(exc.exit_code)
    except _click_types("Exit") as exc:
        sys.exit(exc.exit_code)
    except _click_types("Abort"):
        err_console.print("aborted")
        sys.exit(1)
    # without standalone mode, typer returns the code of a `typer.Exit(code)` (and of --help: 0)
    if isinstance(rv, int) and not isinstance(rv, bool):
        sys.exit(rv)


#: Help of the options that name a profile table's columns (``profiler evaluate``, ``fusion train``);
#: the names tried by default are :data:`cellfusion_core.columns.CANDIDATES`.
COLUMN_OPTION_HELP = {
    "compound": "Compound column (default: Metadata_Compound, else a common pycytominer/JUMP/LINCS name such as "
                "Metadata_pert_iname or Metadata_broad_sample).",
    "concentration": "Concentration/dose column (default: Metadata_Concentration, else e.g. "
                     "Metadata_mmoles_per_liter or Metadata_dose_recode).",
    "moa": "Mechanism-of-action column (default: Metadata_MoA, else e.g. Metadata_moa).",
    "batch": "Batch column (default: Metadata_Batch, else e.g. Metadata_batch).",
    "control": "Negative controls: a value of the compound column (DMSO) or a pandas query "
               "(\"Metadata_pert_type == 'control'\"). Default: Metadata_Control == negative (or "
               "Metadata_control_type == negcon), compound DMSO, or an empty compound.",
}
