"""Language codes: every accepted spelling resolves to one `xxx_Scrp` code; bad ones fail with suggestions."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from langadapt.errors import LanguageCodeError
from langadapt.models.language import (
    FLORES200_CODES,
    canonical_language,
    display_name,
    language_name,
    resolve_against,
)

CANONICAL = re.compile(r"[a-z]{3}_[A-Z][a-z]{3}")

_SIB200_TEXT = """
    ace_Latn amh_Ethi ban_Latn bjn_Latn bug_Latn eng_Latn ewe_Latn gaz_Latn hau_Latn ibo_Latn ind_Latn jav_Latn
    khm_Khmr kin_Latn lug_Latn luo_Latn mar_Deva min_Latn mlt_Latn npi_Deva nya_Latn quy_Latn sin_Sinh sna_Latn
    som_Latn sun_Latn swh_Latn tel_Telu tir_Ethi tso_Latn twi_Latn uig_Arab wol_Latn xho_Latn yor_Latn zul_Latn
"""
SIB200_CODES = _SIB200_TEXT.split()

# AfriSenti and MasakhaNER folder names → canonical code.
AFRICAN_FOLDERS = {
    "hau": "hau_Latn",
    "ibo": "ibo_Latn",
    "kin": "kin_Latn",
    "swa": "swh_Latn",
    "yor": "yor_Latn",
    "amh": "amh_Ethi",
    "pcm": "pcm_Latn",
    "twi": "twi_Latn",
    "lug": "lug_Latn",
    "luo": "luo_Latn",
    "wol": "wol_Latn",
    "xho": "xho_Latn",
    "zul": "zul_Latn",
    "tso": "tso_Latn",
    "tir": "tir_Ethi",
    "orm": "gaz_Latn",
    "arq": "arq_Arab",
    "ary": "ary_Arab",
    "por": "por_Latn",
}

SPELLINGS = [
    # ISO 639-1, ISO 639-3, BCP-47 with - or _, any case, with a region
    ("yo", "yor_Latn"),
    ("yor", "yor_Latn"),
    ("YOR", "yor_Latn"),
    ("yor-Latn", "yor_Latn"),
    ("yor_Latn", "yor_Latn"),
    ("YOR_LATN", "yor_Latn"),
    ("yor-latn", "yor_Latn"),
    ("yo-NG", "yor_Latn"),
    ("  yo_ng ", "yor_Latn"),
    ("ha", "hau_Latn"),
    ("am", "amh_Ethi"),
    ("en-GB", "eng_Latn"),
    ("eng-Latn-GB-x-private", "eng_Latn"),
    # macrolanguages → the FLORES-200 individual language
    ("sw", "swh_Latn"),
    ("swa", "swh_Latn"),
    ("swh", "swh_Latn"),
    ("swa_Latn", "swh_Latn"),
    ("ms", "zsm_Latn"),
    ("msa", "zsm_Latn"),
    ("ar", "arb_Arab"),
    ("ara", "arb_Arab"),
    ("ar-Latn", "arb_Latn"),
    ("fa", "pes_Arab"),
    ("fa-AF", "prs_Arab"),
    ("prs", "prs_Arab"),
    ("om", "gaz_Latn"),
    ("orm", "gaz_Latn"),
    ("ak", "twi_Latn"),
    ("aka", "twi_Latn"),
    ("tw", "twi_Latn"),
    ("twi", "twi_Latn"),
    ("aka_Latn", "aka_Latn"),  # an exact FLORES-200 code is kept as spelled
    ("ne", "npi_Deva"),
    ("lv", "lvs_Latn"),
    ("sq", "als_Latn"),
    ("uz", "uzn_Latn"),
    ("mn", "khk_Cyrl"),
    ("ps", "pbt_Arab"),
    ("mg", "plt_Latn"),
    ("yi", "ydd_Hebr"),
    ("no", "nob_Latn"),
    ("qu", "quy_Latn"),
    ("az", "azj_Latn"),
    ("az-Arab", "azb_Arab"),
    ("ku-Latn", "kmr_Latn"),
    ("ku-Arab", "ckb_Arab"),
    # scripts: the language's own, the region's, or the one given
    ("zh", "zho_Hans"),
    ("zh-TW", "zho_Hant"),
    ("zh-Hant", "zho_Hant"),
    ("zh-yue", "yue_Hant"),
    ("ko", "kor_Hang"),  # CLDR says Kore; FLORES-200 says Hang
    ("acm", "acm_Arab"),  # CLDR has no likely script; FLORES-200 has one
    ("ks", "kas_Arab"),
    ("ks-Deva", "kas_Deva"),
    ("tl", "tgl_Latn"),  # langcodes folds Tagalog into Filipino; FLORES-200 does not
    ("fil", "tgl_Latn"),
    ("iw", "heb_Hebr"),  # deprecated ISO 639-1
    ("fre", "fra_Latn"),  # ISO 639-2/B
    ("sh", "srp_Latn"),
    # valid ISO 639-3 outside FLORES-200, script from CLDR
    ("cmn", "cmn_Hans"),
    ("yor_Arab", "yor_Arab"),
    # English names that langcodes resolves
    ("Yoruba", "yor_Latn"),
    ("yoruba", "yor_Latn"),
    ("Hausa", "hau_Latn"),
    ("Swahili", "swh_Latn"),
    ("Nigerian Pidgin", "pcm_Latn"),
    ("Dari", "prs_Arab"),
]


@pytest.mark.parametrize(("code", "expected"), SPELLINGS)
def test_spellings_resolve_to_one_canonical_code(code: str, expected: str) -> None:
    assert canonical_language(code) == expected


@pytest.mark.parametrize("code", SIB200_CODES)
def test_sib200_folder_codes_round_trip(code: str) -> None:
    assert canonical_language(code) == code


@pytest.mark.parametrize(("folder", "expected"), AFRICAN_FOLDERS.items())
def test_afrisenti_and_masakhaner_folder_codes(folder: str, expected: str) -> None:
    assert canonical_language(folder) == expected


def test_flores200_list_is_the_published_one() -> None:
    assert len(FLORES200_CODES) == 204
    assert len(set(FLORES200_CODES)) == 204
    assert all(CANONICAL.fullmatch(code) for code in FLORES200_CODES)
    assert set(SIB200_CODES) <= set(FLORES200_CODES)
    assert {"arb_Latn", "min_Arab", "taq_Tfng", "zho_Hant", "sat_Olck"} <= set(FLORES200_CODES)


@pytest.mark.parametrize("code", FLORES200_CODES)
def test_every_flores200_code_round_trips_in_any_case_and_separator(code: str) -> None:
    for spelling in (code, code.lower(), code.upper(), code.replace("_", "-")):
        assert canonical_language(spelling) == code, spelling


ERRORS = [
    # (input, words the message must contain, suggestions that must come first)
    ("xx", "unknown language code", ["xho_Latn"]),
    ("yorr", "unknown language", ["yor_Latn"]),
    ("yorba", "unknown language", ["yor_Latn"]),  # by name
    ("Yorùbá", "unknown language", ["yor_Latn"]),  # by name, accents folded
    ("hau_Latm", "unknown language code", ["hau_Latn"]),
    ("yor Latn", "unknown language", ["yor_Latn"]),
    ("english?", "malformed language code", ["eng_Latn"]),
    ("Nigerian_Pidgin", "malformed language code", ["pcm_Latn"]),
    ("123", "malformed language code", []),
    ("", "empty language code", []),
    ("   ", "empty language code", []),
    ("und", "no particular language", []),
    ("qaa", "no particular language", []),
    ("en-Zzzz", "no particular script", []),
    ("ku", "ambiguous", ["kmr_Latn", "ckb_Arab"]),
    ("Kurdish", "ambiguous", ["kmr_Latn", "ckb_Arab"]),
    ("abc", "no known script", ["abc_Latn"]),
]


@pytest.mark.parametrize(("code", "message", "suggestions"), ERRORS)
def test_bad_codes_fail_with_suggestions(code: str, message: str, suggestions: list[str]) -> None:
    with pytest.raises(LanguageCodeError) as caught:
        canonical_language(code)
    err = caught.value
    assert message in err.message
    assert isinstance(err, ValueError)
    assert err.suggestions[: len(suggestions)] == suggestions
    if not suggestions:
        assert err.suggestions == []
    for suggestion in suggestions:
        assert suggestion in str(err)
    assert all(canonical_language(s) == s for s in err.suggestions)


def test_suggestions_are_few() -> None:
    with pytest.raises(LanguageCodeError) as caught:
        canonical_language("zz")
    assert len(caught.value.suggestions) <= 5


@pytest.mark.parametrize(
    ("code", "name"),
    [
        ("yo", "Yoruba"),
        ("yor_Latn", "Yoruba"),
        ("sw", "Swahili"),
        ("npi_Deva", "Nepali"),
        ("gaz_Latn", "West Central Oromo"),
        ("prs", "Dari"),
        ("tgl_Latn", "Tagalog"),
        ("twi", "Twi"),
        ("zh", "Chinese (Simplified)"),
        ("zh-Hant", "Chinese (Traditional)"),
        ("arb_Latn", "Standard Arabic (Latin)"),
        ("kas_Deva", "Kashmiri (Devanagari)"),
        ("yor_Arab", "Yoruba (Arabic)"),
        ("pcm", "Nigerian Pidgin"),
    ],
)
def test_language_name(code: str, name: str) -> None:
    assert language_name(code) == name


def test_every_flores200_code_has_a_real_name() -> None:
    names = {code: language_name(code) for code in FLORES200_CODES}
    assert not [code for code, name in names.items() if "Unknown" in name or "individual" in name]
    assert len(set(names.values())) == 204


def test_language_name_of_a_bad_code_raises() -> None:
    with pytest.raises(LanguageCodeError):
        language_name("yorr")
    assert display_name("yorr") == "yorr" and display_name("yo") == language_name("yo") == "Yoruba"


AVAILABLE = ["yor_Latn", "hau_Latn", "zho_Hans", "arb_Arab"]


@pytest.mark.parametrize(
    ("code", "available", "expected"),
    [
        ("yo", AVAILABLE, "yor_Latn"),
        ("Hausa", AVAILABLE, "hau_Latn"),
        ("ar", AVAILABLE, "arb_Arab"),
        ("yo-NG", ["yor", "hau"], "yor_Latn"),  # available codes in any accepted form
        ("zh", iter(["zh-Hans"]), "zho_Hans"),  # any iterable
    ],
)
def test_resolve_against_available(code: str, available: list[str], expected: str) -> None:
    assert resolve_against(code, available) == expected


@pytest.mark.parametrize(
    ("code", "suggestions"),
    [
        ("ibo", []),
        ("zh-TW", ["zho_Hans"]),  # same language, other script
        ("ary", ["arb_Arab"]),  # closest supported match (langcodes)
    ],
)
def test_resolve_against_missing_lists_what_is_available(code: str, suggestions: list[str]) -> None:
    with pytest.raises(LanguageCodeError) as caught:
        resolve_against(code, AVAILABLE)
    err = caught.value
    assert err.suggestions == suggestions
    assert err.hint == "available: arb_Arab, hau_Latn, yor_Latn, zho_Hans"
    assert canonical_language(code) in err.message


def test_resolve_against_a_bad_code_lists_what_is_available() -> None:
    with pytest.raises(LanguageCodeError) as caught:
        resolve_against("yorr", AVAILABLE)
    assert caught.value.suggestions == ["yor_Latn"]
    assert "hau_Latn" in caught.value.hint


def test_resolve_against_nothing_available() -> None:
    with pytest.raises(LanguageCodeError, match="available: none"):
        resolve_against("yo", [])


def test_lookups_are_cached() -> None:
    canonical_language("yo")
    before = canonical_language.cache_info().hits
    canonical_language("yo")
    assert canonical_language.cache_info().hits == before + 1


CODE_LIKE = st.from_regex(r"\A[a-zA-Z]{2,3}([-_][a-zA-Z]{4})?([-_]([A-Z]{2}|[0-9]{3}))?\Z")
FLORES_SPELLINGS = st.sampled_from(FLORES200_CODES).map(lambda c: c.split("_")[0])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(CODE_LIKE, FLORES_SPELLINGS, st.sampled_from([c for c, _ in SPELLINGS]), st.text(max_size=12)))
def test_canonical_language_is_idempotent_on_its_outputs(code: str) -> None:
    try:
        canonical = canonical_language(code)
    except LanguageCodeError:
        return  # never any other exception
    assert CANONICAL.fullmatch(canonical)
    assert canonical_language(canonical) == canonical
    assert language_name(canonical) == language_name(code)
