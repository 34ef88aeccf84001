"""Language codes: any common spelling (`yo`, `yor`, `yo-NG`, `Yoruba`) to one canonical `xxx_Scrp` code.

The canonical form is ISO 639-3 + ISO 15924 joined by `_`, as FLORES-200, SIB-200 and GlotCC spell it.
`langcodes` does the parsing, normalising, ISO 639-1 → 639-3 mapping, likely scripts and names; this
module adds only the choices FLORES-200 makes that `langcodes` does not (which individual language a
macrolanguage means, `tgl` rather than `fil`, Dari as `prs`).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import re
import unicodedata
from collections.abc import Iterable
from typing import NoReturn

import langcodes
from langcodes import Language, LanguageTagError
from langcodes.data_dicts import LIKELY_SUBTAGS

from langadapt.errors import LanguageCodeError

__all__ = ["FLORES200_CODES", "canonical_language", "display_name", "language_name", "resolve_against"]

# The 204 FLORES-200 language varieties (facebookresearch/flores, flores200/README.md), public reference data.
_FLORES200_TEXT = """
    ace_Arab ace_Latn acm_Arab acq_Arab aeb_Arab afr_Latn ajp_Arab aka_Latn als_Latn amh_Ethi apc_Arab arb_Arab
    arb_Latn ars_Arab ary_Arab arz_Arab asm_Beng ast_Latn awa_Deva ayr_Latn azb_Arab azj_Latn bak_Cyrl bam_Latn
    ban_Latn bel_Cyrl bem_Latn ben_Beng bho_Deva bjn_Arab bjn_Latn bod_Tibt bos_Latn bug_Latn bul_Cyrl cat_Latn
    ceb_Latn ces_Latn cjk_Latn ckb_Arab crh_Latn cym_Latn dan_Latn deu_Latn dik_Latn dyu_Latn dzo_Tibt ell_Grek
    eng_Latn epo_Latn est_Latn eus_Latn ewe_Latn fao_Latn fij_Latn fin_Latn fon_Latn fra_Latn fur_Latn fuv_Latn
    gaz_Latn gla_Latn gle_Latn glg_Latn grn_Latn guj_Gujr hat_Latn hau_Latn heb_Hebr hin_Deva hne_Deva hrv_Latn
    hun_Latn hye_Armn ibo_Latn ilo_Latn ind_Latn isl_Latn ita_Latn jav_Latn jpn_Jpan kab_Latn kac_Latn kam_Latn
    kan_Knda kas_Arab kas_Deva kat_Geor kaz_Cyrl kbp_Latn kea_Latn khk_Cyrl khm_Khmr kik_Latn kin_Latn kir_Cyrl
    kmb_Latn kmr_Latn knc_Arab knc_Latn kon_Latn kor_Hang lao_Laoo lij_Latn lim_Latn lin_Latn lit_Latn lmo_Latn
    ltg_Latn ltz_Latn lua_Latn lug_Latn luo_Latn lus_Latn lvs_Latn mag_Deva mai_Deva mal_Mlym mar_Deva min_Arab
    min_Latn mkd_Cyrl mlt_Latn mni_Beng mos_Latn mri_Latn mya_Mymr nld_Latn nno_Latn nob_Latn npi_Deva nso_Latn
    nus_Latn nya_Latn oci_Latn ory_Orya pag_Latn pan_Guru pap_Latn pbt_Arab pes_Arab plt_Latn pol_Latn por_Latn
    prs_Arab quy_Latn ron_Latn run_Latn rus_Cyrl sag_Latn san_Deva sat_Olck scn_Latn shn_Mymr sin_Sinh slk_Latn
    slv_Latn smo_Latn sna_Latn snd_Arab som_Latn sot_Latn spa_Latn srd_Latn srp_Cyrl ssw_Latn sun_Latn swe_Latn
    swh_Latn szl_Latn tam_Taml taq_Latn taq_Tfng tat_Cyrl tel_Telu tgk_Cyrl tgl_Latn tha_Thai tir_Ethi tpi_Latn
    tsn_Latn tso_Latn tuk_Latn tum_Latn tur_Latn twi_Latn tzm_Tfng uig_Arab ukr_Cyrl umb_Latn urd_Arab uzn_Latn
    vec_Latn vie_Latn war_Latn wol_Latn xho_Latn ydd_Hebr yor_Latn yue_Hant zho_Hans zho_Hant zsm_Latn zul_Latn
"""
FLORES200_CODES: tuple[str, ...] = tuple(_FLORES200_TEXT.split())
_FLORES200_SET = frozenset(FLORES200_CODES)


def _scripts_by_language(codes: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """ISO 639-3 code → the scripts listed for it, in list order."""
    scripts: dict[str, tuple[str, ...]] = {}
    for code in codes:
        lang3, script = code.split("_")
        scripts[lang3] = (*scripts.get(lang3, ()), script)
    return scripts


_FLORES200_SCRIPTS = _scripts_by_language(FLORES200_CODES)

# Where a code (as ISO 639-3, after langcodes normalised it) names a macrolanguage or an alias, the individual
# language FLORES-200 uses for it. Applied unless the input already spells a FLORES-200 code exactly.
_FLORES200_CHOICES: dict[str, str] = {
    "aka": "twi",  # Akan → Twi (SIB-200, AfriSenti and MasakhaNER all use twi)
    "ara": "arb",  # Arabic → Modern Standard Arabic
    "aym": "ayr",  # Aymara → Central Aymara
    "aze": "azj",  # Azerbaijani → North Azerbaijani (az-Arab → azb, below)
    "din": "dik",  # Dinka → Southwestern Dinka
    "fas": "pes",  # Persian → Iranian Persian (fa-AF → prs, below)
    "fil": "tgl",  # langcodes folds tl/tgl into fil; FLORES-200 says tgl
    "ful": "fuv",  # Fula → Nigerian Fulfulde
    "kau": "knc",  # Kanuri → Central Kanuri
    "lav": "lvs",  # Latvian → Standard Latvian
    "mlg": "plt",  # Malagasy → Plateau Malagasy
    "mon": "khk",  # Mongolian → Halh Mongolian
    "msa": "zsm",  # Malay → Standard Malay
    "nep": "npi",  # Nepali → Nepali (individual language)
    "nor": "nob",  # Norwegian → Bokmål
    "ori": "ory",  # Oriya → Odia (individual language)
    "orm": "gaz",  # Oromo → West Central Oromo
    "pus": "pbt",  # Pashto → Southern Pashto
    "que": "quy",  # Quechua → Ayacucho Quechua
    "sqi": "als",  # Albanian → Tosk Albanian
    "swa": "swh",  # Swahili → Swahili (individual language)
    "uzb": "uzn",  # Uzbek → Northern Uzbek
    "yid": "ydd",  # Yiddish → Eastern Yiddish
}
# The same, where the script or the territory decides.
_FLORES200_CHOICES_BY_SUBTAG: dict[tuple[str, str], str] = {
    ("aze", "Arab"): "azb",
    ("uzb", "Arab"): "uzs",
    ("kur", "Latn"): "kmr",
    ("kur", "Arab"): "ckb",
    ("fas", "AF"): "prs",
}
# Macrolanguages that FLORES-200 splits by script, with no default: the script must be given.
_AMBIGUOUS_WITHOUT_SCRIPT: dict[str, tuple[str, ...]] = {"kur": ("kmr_Latn", "ckb_Arab")}
# Display names langcodes gets wrong for FLORES-200 codes (it renders tgl as Filipino).
_NAME_OVERRIDES: dict[str, str] = {"tgl": "Tagalog"}

# Language subtags that name no particular language, and script subtags that name no particular script.
_NOT_A_LANGUAGE = frozenset({"und", "mul", "mis", "zxx"})
_NOT_A_SCRIPT = frozenset({"Zinh", "Zmth", "Zsye", "Zsym", "Zxxx", "Zyyy", "Zzzz"})

_TAG_RE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*")
_NAME_RE = re.compile(r"[^\W\d_]+(?:[ '’()-]+[^\W\d_]*)*")
_HINT = "use an ISO code such as yor_Latn, yor or yo, or an English language name such as Yoruba"
_MAX_SUGGESTIONS = 5


@functools.lru_cache(maxsize=4096)
def canonical_language(code: str) -> str:
    """The canonical `xxx_Scrp` code for a language code or name, or LanguageCodeError saying why not."""
    if not isinstance(code, str):
        raise LanguageCodeError(f"a language code must be a string, not {type(code).__name__}", _HINT)
    text = code.strip()
    if not text:
        raise LanguageCodeError(f"empty language code {code!r}", _HINT)
    if _TAG_RE.fullmatch(text):
        return _canonical_from_tag(text, text)
    if _NAME_RE.fullmatch(text):
        try:
            found = langcodes.find(text)
        except LookupError:
            found = None
        if found is not None:
            return _canonical_from_tag(str(found), text)
        _raise_unknown(text, f"unknown language {text!r}")
    _raise_unknown(text, f"malformed language code {text!r}")


@functools.lru_cache(maxsize=4096)
def language_name(code: str) -> str:
    """The English name of a language (`Yoruba`), with the script where it has several or an unusual one."""
    lang3, script = canonical_language(code).split("_")
    name = _NAME_OVERRIDES.get(lang3) or _plain_name(lang3)
    flores_scripts = _FLORES200_SCRIPTS.get(lang3, ())
    usual = flores_scripts[0] if len(flores_scripts) == 1 else _likely_script(Language.get(lang3))
    if len(flores_scripts) > 1 or script != usual:
        return f"{name} ({Language.make(script=script).script_name()})"
    return name


def display_name(code: str) -> str:
    """`language_name`, or the code itself where it names no language (for messages and pages: never raises)."""
    try:
        return language_name(code)
    except LanguageCodeError:
        return code


def resolve_against(code: str, available: Iterable[str]) -> str:
    """The canonical code if `available` (codes in any accepted form) has it, else LanguageCodeError listing them."""
    offered = sorted({_canonical_or_verbatim(a) for a in available})
    listing = ", ".join(offered) if offered else "none"
    try:
        wanted = canonical_language(code)
    except LanguageCodeError as err:
        raise LanguageCodeError(err.message, f"available: {listing}", err.suggestions) from None
    if wanted in offered:
        return wanted
    suggestions = [c for c in offered if c.split("_")[0] == wanted.split("_")[0]]
    supported = [c.replace("_", "-") for c in offered if "_" in c]
    closest = langcodes.closest_supported_match(wanted.replace("_", "-"), supported) if supported else None
    if closest is not None and closest.replace("-", "_") not in suggestions:
        suggestions.append(closest.replace("-", "_"))
    raise LanguageCodeError(
        f"no {language_name(wanted)} ({wanted}) here", f"available: {listing}", suggestions[:_MAX_SUGGESTIONS]
    )


def _canonical_from_tag(tag: str, given: str) -> str:
    """Canonical code for a BCP-47-like tag (`_` or `-`, any case); `given` is what the user typed."""
    tag = tag.replace("_", "-")
    try:
        norm = Language.get(tag)
    except LanguageTagError:
        _raise_unknown(given, f"malformed language code {given!r}")
    lang = norm.language or "und"
    if lang in _NOT_A_LANGUAGE or (len(lang) == 3 and "qaa" <= lang <= "qtz"):  # qaa-qtz: private use
        raise LanguageCodeError(f"{given!r} names no particular language", _HINT)
    if not norm.is_valid():
        _raise_unknown(given, f"unknown language code {given!r}")
    script = norm.script
    if script is not None and (script in _NOT_A_SCRIPT or "Qaaa" <= script <= "Qabx"):
        _raise_unknown(given, f"{given!r} names no particular script ({script})")

    try:
        lang3 = norm.to_alpha3()
    except LookupError:
        _raise_unknown(given, f"unknown language code {given!r}")
    if script is not None and f"{lang3}_{script}" in _FLORES200_SET:
        return f"{lang3}_{script}"
    if script is None and lang3 in _AMBIGUOUS_WITHOUT_SCRIPT:
        options = list(_AMBIGUOUS_WITHOUT_SCRIPT[lang3])
        raise LanguageCodeError(
            f"ambiguous language code {given!r}: FLORES-200 has {' and '.join(options)}",
            "give the script or the individual language",
            options,
        )
    lang3 = (
        _FLORES200_CHOICES_BY_SUBTAG.get((lang3, script or ""))
        or _FLORES200_CHOICES_BY_SUBTAG.get((lang3, norm.territory or ""))
        or _FLORES200_CHOICES.get(lang3, lang3)
    )
    if script is None:
        script = _default_script(lang3, norm, given)
    return f"{lang3}_{script}"


def _default_script(lang3: str, tag: Language, given: str) -> str:
    """The script a language is written in when none was given: FLORES-200's, else CLDR's likely script."""
    flores_scripts = _FLORES200_SCRIPTS.get(lang3, ())
    if len(flores_scripts) == 1:
        return flores_scripts[0]
    likely = _likely_script(tag) or _likely_script(Language.get(lang3))
    if flores_scripts and likely not in flores_scripts:
        options = [f"{lang3}_{s}" for s in flores_scripts]
        raise LanguageCodeError(
            f"ambiguous language code {given!r}: FLORES-200 has {' and '.join(options)}",
            "give the script",
            options,
        )
    if likely is None:
        raise LanguageCodeError(
            f"no known script for {given!r}", f"give it explicitly, e.g. {lang3}_Latn", [f"{lang3}_Latn"]
        )
    return likely


def _likely_script(tag: Language) -> str | None:
    """CLDR's likely script for a tag, or None where CLDR knows nothing about the language itself."""
    if tag.script is not None:
        return tag.script
    if not any(t in LIKELY_SUBTAGS for t in tag.broader_tags() if not t.startswith("und")):
        return None
    return tag.maximize().script


def _plain_name(lang3: str) -> str:
    """The English name of an ISO 639-3 code, without langcodes' `(individual language)` qualifier."""
    name = Language.get(lang3, normalize=False).language_name()
    if name.startswith("Unknown language"):
        name = Language.get(lang3).language_name()
    return name.replace(" (individual language)", "")


def _canonical_or_verbatim(code: str) -> str:
    """An available code in canonical form, or as given when it cannot be read."""
    try:
        return canonical_language(code)
    except LanguageCodeError:
        return code


def _raise_unknown(given: str, message: str) -> NoReturn:
    """Raise LanguageCodeError for an unreadable code, naming close matches by spelling and by name."""
    suggestions = _suggest(given)
    hint = f"did you mean {' or '.join(suggestions)}? " if suggestions else ""
    raise LanguageCodeError(message, hint + _HINT, suggestions)


def _suggest(given: str) -> list[str]:
    """FLORES-200 codes close to what was typed: by name (langcodes), then edit distance, then fuzzy name."""
    found: list[str] = []
    words = re.sub(r"[^\w ]+|[\d_]+", " ", given).strip()
    if words and not _TAG_RE.fullmatch(words):
        with contextlib.suppress(LookupError, LanguageCodeError):
            found.append(canonical_language(str(langcodes.find(words))))
    typed = re.sub(r"[\s-]+", "_", given.strip().lower())
    by_distance = sorted((_edit_distance(typed, key), code) for key, code in _suggestion_keys())
    nearest = by_distance[0][0]
    if nearest <= max(1, len(typed) // 4):
        found.extend(code for distance, code in by_distance if distance == nearest)
    names = _flores_names()
    for name in difflib.get_close_matches(_fold(words), names, n=3, cutoff=0.75):
        found.extend(names[name])
    return list(dict.fromkeys(found))[:_MAX_SUGGESTIONS]


@functools.lru_cache(maxsize=1)
def _suggestion_keys() -> tuple[tuple[str, str], ...]:
    """(spelling, FLORES-200 code) pairs a typo is measured against: `yor_latn`, `yor`, `yo`."""
    keys: list[tuple[str, str]] = []
    for code in FLORES200_CODES:
        lang3 = code.split("_")[0]
        keys.append((code.lower(), code))
        if _FLORES200_SCRIPTS[lang3][0] == code.split("_")[1]:
            keys.append((lang3, code))
            alpha2 = Language.get(lang3).language
            if alpha2 is not None and len(alpha2) == 2:
                keys.append((alpha2, code))
    return tuple(keys)


@functools.lru_cache(maxsize=1)
def _flores_names() -> dict[str, list[str]]:
    """Lower-cased English names of the FLORES-200 languages → their codes."""
    names: dict[str, list[str]] = {}
    for code in FLORES200_CODES:
        lang3 = code.split("_")[0]
        names.setdefault(_fold(_NAME_OVERRIDES.get(lang3) or _plain_name(lang3)), []).append(code)
    return names


def _fold(text: str) -> str:
    """Lower case without accents, so `Yorùbá` compares close to `yoruba`."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between two short strings."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]
