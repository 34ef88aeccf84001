"""Every `langadapt` command the README shows runs as written on a fresh install, on small synthetic inputs.

The ```sh blocks of README.md are read as they are; each section's commands run in order on a fresh, empty
writable store (`$LANGADAPT_STORE`) over the packaged default adapters, as a new user would start a README
section. File names in the commands are small files made here; `DIR`, `FOLDER` and `ARTIFACT_ID` are the
README's placeholders.
Left out: `make`, `docker`, `kubectl`, `serve run` (Ray Serve), `curl` against a server, and the hub id
`model info xlm-roberta-base` (no hub here).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from langadapt.cli import app
from langadapt.models.store import AdapterStore
from langadapt.models.store_view import packaged_defaults_dir

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"
PREFIX = ".venv/bin/langadapt"
SKIPPED = ("make ", "docker ", "kubectl ", "serve run ", "curl ", f"{PREFIX} model info xlm-roberta-base")

YORUBA = [
    "Adébáyọ̀ ń ṣiṣẹ́ ní ilé-iṣẹ́ ìjọba ní Abuja.",
    "Ọjà ńlá kan wà ní ìlú Ìbàdàn.",
    "Àwọn akẹ́kọ̀ọ́ lọ sí ilé-ìwé ní Èkó lánàá.",
    "Ààrẹ Tinubu sọ̀rọ̀ nípa ètò ọrọ̀ ajé.",
    "Òjò rọ̀ púpọ̀ ní Ọ̀yọ́ lóṣù tó kọjá.",
    "Bọ́ọ̀lù àfẹsẹ̀gbá jẹ́ eré ìdárayá tí wọ́n fẹ́ràn.",
    "Dókítà Ṣadé ṣí ilé ìwòsàn tuntun ní Abẹ́òkúta.",
    "Ìjọba ìpínlẹ̀ Èkó kéde ètò tuntun fún àwọn àgbẹ̀.",
]
NER = [  # MasakhaNER style: a token and its tag per line, a blank line between sentences
    [("Adébáyọ̀", "B-PER"), ("ń", "O"), ("ṣiṣẹ́", "O"), ("ní", "O"), ("Abuja", "B-LOC"), (".", "O")],
    [("Ààrẹ", "O"), ("Bola", "B-PER"), ("Tinubu", "I-PER"), ("lọ", "O"), ("sí", "O"), ("Èkó", "B-LOC")],
    [("Dókítà", "O"), ("Ṣadé", "B-PER"), ("ṣiṣẹ́", "O"), ("ní", "O"), ("Ìbàdàn", "B-LOC"), ("lánàá", "B-DATE")],
    [("Ilé-iṣẹ́", "B-ORG"), ("Dangote", "I-ORG"), ("wà", "O"), ("ní", "O"), ("Kano", "B-LOC"), (".", "O")],
]
ROWS = [  # tables whose rows say their own language
    {"text": "Ọjà ńlá kan wà ní ìlú Ìbàdàn.", "lang": "yo"},
    {"text": "Shugaban kasa ya ziyarci Kano ranar Litinin.", "lang": "ha"},
    {"text": "Rais alizungumza na waandishi wa habari jijini Nairobi.", "lang": "sw"},
    {"text": "Chinedu gara ahịa na Enugu ụnyaahụ.", "lang": "ig"},
    {"text": "Perezida yasuye abaturage i Kigali ejo.", "lang": "rw"},
    {"text": "Mo fẹ́ràn oúnjẹ yìí gan-an ni!", "lang": "yor_Latn"},
]


def sh_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(section heading, command lines with continuations joined) of each ```sh block, in order."""
    blocks: list[tuple[str, list[str]]] = []
    heading = ""
    for match in re.finditer(r"^## ([^\n]+)$|^```sh\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        if match.group(1):
            heading = match.group(1).strip()
        else:
            lines = [line.strip() for line in match.group(2).replace("\\\n", " ").splitlines()]
            blocks.append((heading, [line for line in lines if line and not line.startswith("#")]))
    return blocks


def runnable(lines: list[str]) -> list[str]:
    return [line for line in lines if not line.startswith(SKIPPED)]


SECTIONS: dict[str, list[str]] = {}
for _heading, _lines in sh_blocks(README.read_text(encoding="utf-8")):  # every block of a section, in order
    SECTIONS.setdefault(_heading, []).extend(runnable(_lines))
SECTIONS = {heading: lines for heading, lines in SECTIONS.items() if lines}
# What each section leaves behind in its working folder or its store, beside exit code 0.
OUTPUTS = {
    "Training": ["report.md", "runs", "store/adapters/any-lid"],
    "Export": ["store/adapters/default-yor_Latn-ner.onnx-fp32", "store/adapters/default-yor_Latn-ner.onnx-fp16"],
    "Batch labeling": ["corpus.labelled.jsonl", "news.labelled.parquet", "test.pred.conll", "big.out.jsonl"],
    "Command line": ["store/adapters/hau_Latn-topic"],
}


def make_inputs(folder: Path) -> None:
    """Small files for every file name the README's commands read."""
    (folder / "corpus.txt").write_text("\n".join(YORUBA * 3) + "\n", encoding="utf-8")
    (folder / "held-out.txt").write_text("\n".join(YORUBA[:4]) + "\n", encoding="utf-8")
    conll = "\n\n".join("\n".join(f"{word} {tag}" for word, tag in sentence) for sentence in NER) + "\n"
    for name in ("train.txt", "dev.txt", "test.txt", "test.conll"):
        (folder / name).write_text(conll, encoding="utf-8")
    news = ["category\theadline\ttext\turl"]  # a quoted news TSV: a headline spanning two lines, inner quotes
    for i, text in enumerate(YORUBA):
        category = ("politics", "sports", "health")[i % 3]
        news.append(f'{category}\t"Ìròyìn\n{i}"\t"{text} ""{i}"""\thttps://example.org/{i}')
    (folder / "news.tsv").write_text("\n".join(news) + "\n", encoding="utf-8")
    tweets = ["id,tweet,label"] + [f'{i},"{text}",{(-1, 0, 1)[i % 3]}' for i, text in enumerate(YORUBA)]
    (folder / "tweets.csv").write_text("\n".join(tweets) + "\n", encoding="utf-8")
    stray = [
        [(word, "I-LOC" if (n == 0 and tag == "B-LOC") else tag) for word, tag in sentence]
        for n, sentence in enumerate(NER)
    ]
    stray_conll = "\n\n".join("\n".join(f"{word} {tag}" for word, tag in sentence) for sentence in stray) + "\n"
    (folder / "train.conll").write_text(stray_conll, encoding="utf-8")  # a stray I- tag, as MasakhaNER has some
    sib = {"yor_Latn": YORUBA[:6], "hau_Latn": [ROWS[1]["text"]] * 6, "swh_Latn": [ROWS[2]["text"]] * 6}
    for code, sentences in sib.items():  # SIB-200's layout: the same sentence ids in every language, split by id
        for split, ids in (("train", (0, 1)), ("dev", (2, 3)), ("test", (4, 5))):
            (folder / "sib200" / code).mkdir(parents=True, exist_ok=True)
            rows = ["index_id\tcategory\ttext", *(f"{i}\tpolitics\t{sentences[i]}" for i in ids)]
            (folder / "sib200" / code / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (folder / "big.jsonl").write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in ROWS), "utf-8")
    import pandas as pd

    pd.DataFrame(ROWS).to_parquet(folder / "news.parquet")
    shutil.copytree(AdapterStore(packaged_defaults_dir()).path("hau_Latn-topic"), folder / "adapter-folder")


def argv(line: str, values: dict[str, str]) -> list[str]:
    """A README command line as the shell would pass it: placeholders filled in, globs expanded."""
    args = shlex.split(line, comments=True)
    assert args[0] == PREFIX, f"not a langadapt command: {line}"
    out: list[str] = []
    for arg in args[1:]:
        arg = values.get(arg, arg)
        matches = sorted(str(path) for path in Path().glob(arg)) if "*" in arg else []
        out.extend(matches or [arg])
    return out


def test_every_readme_command_is_either_run_or_left_out_on_purpose() -> None:
    for heading, lines in sh_blocks(README.read_text(encoding="utf-8")):
        for line in runnable(lines):
            assert line.startswith(f"{PREFIX} "), f"{heading}: {line!r} is neither a langadapt command nor left out"
    assert set(SECTIONS) == set(OUTPUTS)


@pytest.mark.timeout(3600)  # the embedded model on a shared CPU: training, three exports, Ray
@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_readme_section_runs_as_written(section: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A section's commands in order, from a fresh install: an empty store over the packaged defaults."""
    if packaged_defaults_dir() is None:
        pytest.skip("the default adapter set is not shipped in this build")
    make_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "store"
    monkeypatch.setenv("LANGADAPT_STORE", str(store))
    values = {"DIR": str(store), "FOLDER": str(tmp_path / "adapter-folder")}
    runner = CliRunner()
    for line in SECTIONS[section]:
        result = runner.invoke(app, argv(line, values))
        assert result.exit_code == 0, f"{line}\n{result.output}"
        published = re.match(r"published (\S+) v\d+", result.stdout)
        if published and " export fused " in line:
            values.setdefault("ARTIFACT_ID", published.group(1))
    for name in OUTPUTS[section]:
        assert (tmp_path / name).exists(), f"{section}: no {name} after {SECTIONS[section]}"
