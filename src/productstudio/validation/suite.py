"""The Great Expectations suite over the metadata table, with thresholds from params.yaml."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from productstudio.config import ValidateSettings

SUITE_NAME = "product_images"


@dataclass
class ExpectationOutcome:
    name: str  # what a person calls this rule
    success: bool
    detail: str  # one line: what was found
    unexpected: list  # the offending values or file paths (first ones)


def _expectations(gx, settings: ValidateSettings, categories: list[str]) -> list[tuple[str, str, object]]:
    """(asset, human name, expectation) triples. Asset 'files' is the metadata table, 'counts' per category."""
    e = gx.expectations
    leak_mostly = 1.0 - settings.max_leak_fraction
    return [
        ("files", "every file readable and usable", e.ExpectColumnValuesToBeInSet(column="status", value_set=["ok", "converted"])),
        ("files", "every file in a category folder", e.ExpectColumnValuesToNotBeNull(column="category")),
        ("files", "categories in the declared set", e.ExpectColumnValuesToBeInSet(column="category", value_set=categories)),
        ("files", "allowed formats", e.ExpectColumnValuesToBeInSet(column="format", value_set=settings.allowed_formats)),
        ("files", "allowed modes", e.ExpectColumnValuesToBeInSet(column="mode", value_set=settings.allowed_modes)),
        ("files", "width within bounds", e.ExpectColumnValuesToBeBetween(column="width", min_value=settings.min_side, max_value=settings.max_side)),
        ("files", "height within bounds", e.ExpectColumnValuesToBeBetween(column="height", min_value=settings.min_side, max_value=settings.max_side)),
        ("files", "pixel count within max_pixels", e.ExpectColumnValuesToBeBetween(column="pixels", min_value=1, max_value=settings.max_pixels)),
        ("files", "no (near-)identical content across splits", e.ExpectColumnValuesToBeInSet(column="leaks_across_splits", value_set=[False], mostly=leak_mostly)),
        ("counts", "files per category within bounds", e.ExpectColumnValuesToBeBetween(column="count", min_value=settings.min_per_category, max_value=settings.max_per_category)),
    ]


def category_counts(files: pd.DataFrame, categories: list[str]) -> pd.DataFrame:
    """Usable files per declared category (zero where a category has none) plus any undeclared ones."""
    usable = files[files["status"] != "quarantined"]
    counts = usable["category"].value_counts()
    names = list(categories) + sorted(set(counts.index) - set(categories))
    return pd.DataFrame({"category": names, "count": [int(counts.get(name, 0)) for name in names]})


def run_suite(files: pd.DataFrame, categories: list[str], settings: ValidateSettings, docs_dir: Path) -> list[ExpectationOutcome]:
    """Validate with Great Expectations and build its Data Docs HTML under docs_dir."""
    import great_expectations as gx  # slow import (about 5 s): only when validating
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.add_data_docs_site(
        site_name="productstudio",
        site_config={
            "class_name": "SiteBuilder",
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(Path(docs_dir).resolve())},
        },
    )
    tables = {
        "files": files.assign(pixels=files["width"] * files["height"]),
        "counts": category_counts(files, categories),
    }
    source = context.data_sources.add_pandas("metadata")
    expectations = _expectations(gx, settings, categories)
    definitions = []
    for asset_name in tables:
        batch = source.add_dataframe_asset(asset_name).add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(gx.ExpectationSuite(name=f"{SUITE_NAME}.{asset_name}"))
        for asset, _, expectation in expectations:
            if asset == asset_name:
                suite.add_expectation(expectation)
        definitions.append((asset_name, context.validation_definitions.add(gx.ValidationDefinition(name=asset_name, data=batch, suite=suite))))

    outcomes = []
    names = {expectation.id: name for _, name, expectation in expectations}
    for asset_name, definition in definitions:
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=f"check_{asset_name}",
                validation_definitions=[definition],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
                result_format="COMPLETE",
            )
        )
        result = checkpoint.run(batch_parameters={"dataframe": tables[asset_name]})
        for run in result.run_results.values():
            for item in run.results:
                outcomes.append(_outcome(names[item.expectation_config.id], item, tables[asset_name]))
    return outcomes


def _outcome(name: str, item, table: pd.DataFrame) -> ExpectationOutcome:
    result = item.result or {}
    indices = result.get("unexpected_index_list") or []
    if "path" in table.columns and indices:
        unexpected = [str(table.loc[i, "path"]) for i in indices[:20]]
    elif "category" in table.columns and indices:
        unexpected = [f"{table.loc[i, 'category']}: {table.loc[i, 'count']}" for i in indices[:20]]
    else:
        unexpected = [str(v) for v in (result.get("partial_unexpected_list") or [])[:20]]
    count = result.get("unexpected_count")
    total = result.get("element_count")
    detail = f"{count} of {total} unexpected" if count is not None else "checked"
    return ExpectationOutcome(name, bool(item.success), detail, unexpected)
