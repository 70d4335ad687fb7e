"""Both command-line tools: every command's --help renders, usage errors are usage messages.

The commands are enumerated from the typer apps, so a new command is covered without editing this
file. The in-process tests call the same ``main()`` as the console scripts (``run_main``: error
handling included); one subprocess test per tool runs the installed entry point itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer

import fusion.cli
import profiler.cli

CLIS = {"profiler": profiler.cli, "fusion": fusion.cli}


def _commands(module) -> dict[str, object]:
    """name → click command of every command of a typer app (typer's vendored click or click)."""
    group = typer.main.get_command(module.app)
    return dict(group.commands)


def _run(module, name: str, args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """``NAME ARGS`` through the tool's ``main()``: (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", [name, *args])
    monkeypatch.setenv("COLUMNS", "120")
    with pytest.raises(SystemExit) as info:
        module.main()
    code = info.value.code
    code = 0 if code is None else code
    out, err = capsys.readouterr()
    return code, out, err


HELP_CASES = [(tool, None) for tool in CLIS] + [
    (tool, cmd) for tool, module in CLIS.items() for cmd in sorted(_commands(module))]


@pytest.mark.parametrize(("tool", "command"), HELP_CASES,
                         ids=[f"{t}-{c or 'root'}" for t, c in HELP_CASES])
def test_help_renders(tool, command, monkeypatch, capsys):
    args = ([command] if command else []) + ["--help"]
    code, out, err = _run(CLIS[tool], tool, args, monkeypatch, capsys)
    assert code == 0, f"{tool} {' '.join(args)} exited {code}:\n{out}\n{err}"
    assert "Traceback" not in out + err
    assert "Usage:" in out
    assert (f"{tool} {command}" if command else tool) in out
    # every option of the command is listed (nothing lost to a rendering error)
    if command:
        cmd = _commands(CLIS[tool])[command]
        for param in cmd.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--"):
                    assert opt in out, f"{tool} {command} --help does not show {opt}"


def test_every_command_has_a_help_line():
    for tool, module in CLIS.items():
        for name, cmd in _commands(module).items():
            assert (cmd.help or cmd.short_help or "").strip(), f"{tool} {name} has no help text"


def _usage_cases():
    cases = []
    for tool, module in CLIS.items():
        cases.append((tool, ["clusterr", "x"], "No such command"))
        cases.append((tool, ["--bogus-option"], "No such option"))
        for name, cmd in sorted(_commands(module).items()):
            cases.append((tool, [name, "--bogus-option"], "No such option"))
            required = [p for p in cmd.params if getattr(p, "required", False)
                        and type(p).__name__.endswith("Argument")]
            if required:
                cases.append((tool, [name], "Missing argument"))
    return cases


USAGE_CASES = _usage_cases()


@pytest.mark.parametrize(("tool", "args", "words"), USAGE_CASES,
                         ids=[f"{t}-{'_'.join(a)}" for t, a, _ in USAGE_CASES])
def test_usage_errors_exit_2_with_a_usage_message(tool, args, words, monkeypatch, capsys):
    code, out, err = _run(CLIS[tool], tool, args, monkeypatch, capsys)
    assert code == 2, f"{tool} {' '.join(args)} exited {code}:\n{out}\n{err}"
    assert "Traceback" not in out + err
    assert "Usage:" in err and words in err, err
    assert "--help" in err  # says how to get help


def test_missing_argument_case_exists_for_both_tools():
    """The enumeration above really produced the three kinds of usage error for each tool."""
    for tool in CLIS:
        kinds = {w for t, _, w in USAGE_CASES if t == tool}
        assert kinds == {"No such command", "No such option", "Missing argument"}, (tool, kinds)


def _entry_point(tool: str) -> str:
    exe = Path(sys.executable).parent / tool
    if exe.exists():
        return str(exe)
    found = shutil.which(tool)
    if found is None:
        pytest.skip(f"the {tool} console script is not installed beside {sys.executable} nor on PATH")
    return found


@pytest.mark.parametrize("tool", sorted(CLIS))
def test_installed_entry_points(tool, tmp_path):
    """The console scripts themselves: --help exits 0, a mistyped option exits 2, no traceback."""
    env = {**os.environ, "COLUMNS": "120"}
    exe = _entry_point(tool)
    first = sorted(_commands(CLIS[tool]))[0]
    ok = subprocess.run([exe, first, "--help"], capture_output=True, text=True, cwd=tmp_path, env=env,
                        timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "Usage:" in ok.stdout and "Traceback" not in ok.stdout + ok.stderr
    bad = subprocess.run([exe, first, "--bogus-option"], capture_output=True, text=True, cwd=tmp_path,
                         env=env, timeout=120)
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert "No such option" in bad.stderr and "Traceback" not in bad.stdout + bad.stderr


def test_usage_errors_of_either_click_are_handled(monkeypatch, capsys):
    """typer >= 0.2x raises its vendored click's exceptions (typer._click), older typer the click
    package's: run_main turns both into a usage message and exit status 2."""
    from cellfusion_core.cli import _click_types, run_main

    raised = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            raised.append(__import__(module, fromlist=["UsageError"]).UsageError)
        except ImportError:
            continue
    assert raised, "neither typer._click nor click is importable"
    for usage_error in raised:
        assert issubclass(usage_error, _click_types("ClickException"))
        app = typer.Typer(add_completion=False)

        @app.command()
        def cmd() -> None:
            raise usage_error("a planted usage error")

        @app.command()
        def other() -> None:  # two commands: a group, as in both real CLIs
            pass

        monkeypatch.setattr(sys, "argv", ["tool", "cmd"])
        with pytest.raises(SystemExit) as info:
            run_main(app)
        assert info.value.code == 2, usage_error
        err = capsys.readouterr().err
        assert "a planted usage error" in err and "Traceback" not in err


def test_typer_exit_code_is_kept(monkeypatch):
    """Without standalone mode typer returns the code of `typer.Exit(code)`: run_main exits with it."""
    from cellfusion_core.cli import run_main

    app = typer.Typer(add_completion=False)

    @app.command()
    def cmd() -> None:
        raise typer.Exit(3)

    @app.command()
    def other() -> None:
        pass

    monkeypatch.setattr(sys, "argv", ["tool", "cmd"])
    with pytest.raises(SystemExit) as info:
        run_main(app)
    assert info.value.code == 3
