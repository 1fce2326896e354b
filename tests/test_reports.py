"""Report rules: section extraction, R2Gen cleaning, placeholders, length limits."""

from __future__ import annotations

import pytest

from medvl.data.config import ReportConfig
from medvl.data.reports import apply_rules, clean_r2gen, extract_sections, rules_metadata, select_section

from .data_fixtures import MIMIC_REPORT


def test_sections_of_a_mimic_report() -> None:
    sec = extract_sections(MIMIC_REPORT)
    assert sec["FINDINGS"] == (
        "There is no focal consolidation, pleural effusion or pneumothorax. The heart is normal in size."
    )
    assert sec["IMPRESSION"] == "No acute cardiopulmonary process." and sec["INDICATION"] == "___F with cough"
    assert sec[""] == "FINAL REPORT"


def test_inline_headers_and_choices() -> None:
    text = "Indication: cough. FINDINGS: Heart normal. IMPRESSION: Normal."
    assert select_section(text, "findings") == ("Heart normal.", "")
    assert select_section(text, "impression") == ("Normal.", "")
    assert select_section(text, "findings+impression") == ("Heart normal. Normal.", "")
    assert select_section("IMPRESSION: Normal.", "findings|impression") == ("Normal.", "")
    report, problem = select_section("IMPRESSION: Normal.", "findings")
    assert report == "" and "no FINDINGS section" in problem and "findings|impression" in problem
    assert select_section("Just text.", "full") == ("Just text.", "")
    with pytest.raises(ValueError, match="data.reports.section"):
        select_section(text, "summary")


def test_r2gen_cleaning_matches_r2gen() -> None:
    assert (
        clean_r2gen("The heart is normal in size. The lungs are clear.")
        == "the heart is normal in size . the lungs are clear ."
    )
    assert clean_r2gen("1. No acute process. 2. Stable XXXX (left).") == "no acute process . stable xxxx left ."
    assert clean_r2gen("Heart size normal.\n\nNo ___ effusion..") == "heart size normal . no  effusion ."


def test_rules_order_and_validation() -> None:
    cfg = ReportConfig(deid="unify", clean="r2gen", max_words=4)
    assert apply_rules("No ___ effusion. XXXX is seen.", cfg) == "no xxxx effusion ."
    assert apply_rules("No ___ effusion.", ReportConfig(deid="drop")) == "No effusion."
    assert apply_rules("a b c", ReportConfig()) == "a b c"
    assert rules_metadata(cfg)["max_words"] == 4
    with pytest.raises(ValueError, match="data.reports.clean"):
        ReportConfig(clean="lower")
    with pytest.raises(ValueError, match="max_words"):
        ReportConfig(max_words=-1)
