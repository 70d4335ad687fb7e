"""The generated reference docs (docs/features.md, docs/cli.md) match the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import load_script

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gen_docs():
    return load_script(REPO / "tools" / "gen_docs.py", "gen_docs")


def test_features_md_is_up_to_date(gen_docs):
    assert gen_docs.FEATURES_MD.read_text(encoding="utf-8") == gen_docs.features_markdown(), (
        "docs/features.md is out of date: run `.venv/bin/python tools/gen_docs.py`")


def test_cli_md_is_up_to_date(gen_docs):
    assert gen_docs.CLI_MD.read_text(encoding="utf-8") == gen_docs.cli_markdown(), (
        "docs/cli.md is out of date: run `.venv/bin/python tools/gen_docs.py`")


def test_every_family_documents_its_features(gen_docs):
    assert gen_docs.families_without_docs() == [], (
        "feature families without FeatureDoc entries (docs/features.md cannot describe them)")


def test_feature_dictionary_lists_every_family_and_function(gen_docs):
    from profiler.measure import families

    text = gen_docs.features_markdown()
    for name, fam in families().items():
        assert f"## {name}\n" in text
        assert f"`{fam.module}`" in text
        for doc in fam.features:
            assert doc.pattern.replace("|", "\\|") in text
            assert doc.units.replace("|", "\\|") in text


def _instance(pattern: str) -> str:
    """One concrete name of a pattern: {channel} → DNA, {a,b,c} → a."""
    pattern = pattern.replace("{channel}", "DNA")
    return re.sub(r"\{([^{}]*?),[^{}]*\}", r"\1", pattern)


def test_documented_patterns_match_measured_columns(gen_docs):
    """Every concrete (placeholder-free) pattern of a family names a column that family returns."""
    import numpy as np

    from profiler.measure import families, measure_objects

    labels = np.zeros((48, 48), np.int32)
    labels[5:20, 6:22] = 1
    labels[26:44, 24:40] = 2
    rng = np.random.default_rng(0)
    images = {"DNA": rng.random((48, 48), dtype=np.float32), "Tubulin": rng.random((48, 48), dtype=np.float32)}
    for name in ("AreaShape", "Intensity", "Location"):
        cols = set(measure_objects(labels, images, compartment="Cells", families=[name]).columns)
        concrete = [c for c in (_instance(d.pattern) for d in families()[name].features) if "{" not in c]
        assert concrete, name
        missing = [p for p in concrete if f"Cells_{p}" not in cols]
        assert not missing, f"{name}: documented but not measured: {missing}"


def test_cli_reference_lists_every_command_and_option(gen_docs):
    import typer

    from fusion.cli import app as fusion_app
    from profiler.cli import app as profiler_app

    text = gen_docs.cli_markdown()
    for tool, app in (("profiler", profiler_app), ("fusion", fusion_app)):
        group = typer.main.get_command(app)
        ctx = group.context_class(group, info_name=tool)
        names = group.list_commands(ctx)
        assert names, tool
        for name in names:
            assert f"### `{tool} {name}`" in text
            for p in group.get_command(ctx, name).params:
                if p.param_type_name == "option" and not p.hidden:
                    assert f"`{p.opts[0]}" in text, (tool, name, p.opts)


def test_check_mode_detects_a_stale_file(gen_docs, tmp_path, monkeypatch):
    stale = tmp_path / "features.md"
    stale.write_text("old\n", encoding="utf-8")
    fresh = tmp_path / "cli.md"
    fresh.write_text(gen_docs.cli_markdown(), encoding="utf-8")
    monkeypatch.setattr(gen_docs, "FEATURES_MD", stale)
    monkeypatch.setattr(gen_docs, "CLI_MD", fresh)
    assert gen_docs.stale() == [stale]
    assert gen_docs.main(["--check"]) == 1


def test_readme_lists_every_benchmark_and_links_exist():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    scripts = sorted(p.name for p in (REPO / "benchmarks").glob("*.py") if not p.name.startswith("_"))
    assert scripts
    missing = [s for s in scripts if f"`{s}`" not in readme]
    assert not missing, f"benchmarks not described in README.md: {missing}"
    links = re.findall(r"\]\(((?:docs|notebooks)/[^)#]+)", readme)
    assert links
    broken = [link for link in links if not (REPO / link).exists()]
    assert not broken, f"README.md links to missing files: {broken}"
