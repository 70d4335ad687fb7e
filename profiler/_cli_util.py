"""What both command-line tools share: error reporting and logging set-up."""

from __future__ import annotations

import logging
import os
import sys
import typer
from rich.console import Console
from rich.logging import RichHandler

from profiler.errors import CellfusionError

err_console = Console(stderr=True)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=err_console, show_path=False)], force=True)
    # the libraries' own INFO chatter (Dask's cluster start-up, numba, matplotlib) only with --verbose
    # distributed sets its loggers from Dask's config when it is imported (workers too): tell it there
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "debug" if verbose else "warning")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)


NOISY_LOGGERS = ("distributed", "dask", "numba", "matplotlib", "PIL", "fsspec", "asyncio", "tornado", "shap")


def run_main(app: typer.Typer) -> None:
    """Run a typer app; a CellfusionError becomes one red message and exit status 2."""
    try:
        app(standalone_mode=False)
    except CellfusionError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
        sys.exit(2)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(1)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise

