"""The `samples` field as a person fills it in: a list pasted into the trigger form's text box (one id per
line, or separated by commas), "all approved", or a JSON list through the API. The form's server-side check
(the Param's JSON schema) and `plan` read a pasted text the same way: items split at commas and line breaks,
whitespace and blank lines ignored, every id a full match of the sample id rule.
"""

from __future__ import annotations

import copy

import pytest

from pipeline_plan import PipelineSpec, RunConfigError, pipeline_params, plan_run

SPEC = PipelineSpec(name="rnaseq", steps=["fastp", "salmon_quant"], reference_files=["transcriptome.fa"],
                    index_tool="salmon")
LAKE = "s3://lake-bucket/genomics"
WITH_READS = ["RNA1", "RNA2", "RNA3", "A-1.x_2"]


def _listing(prefix: str) -> list[str]:
    if prefix.endswith("/references/ref1/"):
        return ["transcriptome.fa", "index/salmon/metrics.json"]
    if prefix.endswith("/raw/P1/"):
        return [f"{s}_R{i}.fastq.gz" for s in WITH_READS for i in (1, 2)]
    return []


def planned(samples, approved=()):
    config = {"project": "P1", "reference": "ref1", "pipeline_version": "1.0", "samples": samples}
    return plan_run(SPEC, config, lake_root=LAKE, backend="aws", list_files=_listing,
                    approved_samples=lambda project: list(approved), max_map_length=1024)["samples"]


@pytest.mark.parametrize("pasted, samples", [
    ("RNA1\nRNA2", ["RNA1", "RNA2"]),
    ("RNA1,RNA2,RNA3", ["RNA1", "RNA2", "RNA3"]),
    ("RNA1, RNA2", ["RNA1", "RNA2"]),
    ("  RNA1 \n\n\tRNA2\t\n\n", ["RNA1", "RNA2"]),  # blank lines, surrounding whitespace
    ("RNA1\r\nRNA2\r\n", ["RNA1", "RNA2"]),  # pasted from a Windows sheet
    ("RNA1,\nRNA2,", ["RNA1", "RNA2"]),  # a column copied with its commas
    ("RNA2\nRNA1", ["RNA2", "RNA1"]),  # order kept
    ("A-1.x_2", ["A-1.x_2"]),  # one id alone
])
def test_a_pasted_list_plans_its_samples_in_order(pasted, samples):
    assert planned(pasted) == samples


def test_all_approved_typed_in_the_box_resolves_through_the_registry():
    assert planned(" all approved\n", approved=["RNA3", "RNA1"]) == ["RNA3", "RNA1"]


def test_a_json_list_from_the_api_plans_as_before():
    assert planned(["RNA1", "RNA2"]) == ["RNA1", "RNA2"]


@pytest.mark.parametrize("pasted, message", [
    ("RNA1\nRNA 2", r"invalid sample id\(s\) \['RNA 2'\]"),  # a space inside an id is not a separator
    ("RNA1\nbad!id\nRNA2", r"invalid sample id\(s\) \['bad!id'\]"),
    ("RNA1;RNA2", r"invalid sample id\(s\) \['RNA1;RNA2'\]"),  # only commas and line breaks separate
    ("RNA1\nRNA2\nRNA1", r"samples lists \['RNA1'\] more than once"),
    ("RNA1, RNA1 ,RNA2,RNA2", r"samples lists \['RNA1', 'RNA2'\] more than once"),
    ("", "samples must be a non-empty list"),
    ("\n , \n", r"samples must be a non-empty list of sample ids or \"all approved\", got '\\n , \\n'"),
    ("all approved, RNA1", r"invalid sample id\(s\) \['all approved'\]"),
])
def test_a_bad_pasted_list_is_refused_naming_the_item(pasted, message):
    with pytest.raises(RunConfigError, match=message):
        planned(pasted)


def test_a_refused_list_names_every_bad_item_at_once():
    with pytest.raises(RunConfigError) as refused:
        planned("RNA1\n-x\nRNA2\ny z")
    assert "['-x', 'y z']" in str(refused.value)


# --- the same reading in the form's check, before a run is created -----------------------------------
def _validated(samples):
    params = copy.deepcopy(pipeline_params())
    from airflow.sdk.definitions.param import ParamsDict

    checked = ParamsDict(params)
    checked.update({"samples": samples})
    return checked.validate()["samples"]


@pytest.mark.parametrize("samples", [
    "RNA1\nRNA2", "RNA1, RNA2", "\n RNA1 \n\nRNA2\n", "RNA1,\r\nRNA2", "all approved", "S1", ["S1", "S2"],
])
def test_the_form_accepts_what_plan_reads(samples):
    assert _validated(samples) == samples


@pytest.mark.parametrize("samples", [
    "RNA1\nbad!id", "RNA1 RNA2", "", "\n", "all approved\nRNA1", "RNA1\n\u200bRNA2", "RNA1;RNA2",
    ["S1", "S1"], ["S1", "bad id"], [], "x" * 129,
])
def test_the_form_refuses_a_bad_list_before_a_run_is_created(samples):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="param samples"):
        _validated(samples)


def test_the_samples_description_says_what_to_type():
    described = pipeline_params()["samples"].description
    assert "one per line" in described and "commas" in described and '"all approved"' in described
