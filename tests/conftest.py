"""Shared fixtures: tiny random encoders with a tiny Unigram tokenizer (built locally, no download), and real servers.

The server fixtures live here rather than in tests/integration/conftest.py: a second `conftest` module would
shadow this one for the tests that import its helpers (`from conftest import ...`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]

# A small synthetic multilingual corpus: enough pieces for realistic sub-word splits in several scripts.
SYNTHETIC_SENTENCES = [
    "Ọmọ náà lọ sí ilé ìwé ní Èkó lánàá.",
    "Adébáyọ̀ ń ṣiṣẹ́ ní ilé-iṣẹ́ ìjọba ní Abuja.",
    "Yaran sun tafi makaranta a Kano jiya.",
    "Shugaban kasa ya ziyarci Legas ranar Litinin.",
    "Mtoto alienda shuleni Nairobi jana asubuhi.",
    "Rais wa Tanzania alizungumza na waandishi wa habari.",
    "Nwa ahụ gara ụlọ akwụkwọ na Enugu ụnyaahụ.",
    "Umwana yagiye ku ishuri i Kigali ejo hashize.",
    "The child went to school in Lagos yesterday.",
    "ሰላም እንዴት ነህ ዛሬ ጥሩ ቀን ነው",
    "नमस्ते आप कैसे हैं आज अच्छा दिन है",
    "今天天气很好我们去公园散步",
    "Football match ended two to one in Ibadan.",
    "Ijọba ti kede pé àwọn ilé-ìwé yóò ṣí padà.",
]


def synthetic_corpus(repeats: int = 20) -> list[str]:
    """The synthetic sentences repeated, with numbers mixed in so the vocabulary covers digits."""
    lines: list[str] = []
    for i in range(repeats):
        for s in SYNTHETIC_SENTENCES:
            lines.append(f"{s} {i}")
    return lines


def canonical_unigram(tokenizer: Any) -> Any:
    """The trained Unigram model with its pieces in a fixed order (the trainer orders score ties per run)."""
    from tokenizers import models

    vocab = json.loads(tokenizer.to_str())["model"]["vocab"]
    specials = [(piece, score) for piece, score in vocab if piece in SPECIAL_TOKENS]
    specials.sort(key=lambda item: SPECIAL_TOKENS.index(item[0]))
    rest = sorted(((p, round(s, 3)) for p, s in vocab if p not in SPECIAL_TOKENS), key=lambda item: (-item[1], item[0]))
    return models.Unigram([*specials, *rest], unk_id=SPECIAL_TOKENS.index("<unk>"), byte_fallback=False)


def build_tiny_tokenizer(out_dir: Path, vocab_size: int = 600):
    """Train a tiny XLM-R-style Unigram tokenizer (Metaspace, `<s> … </s>`) and save it as a fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, unk_token="<unk>", show_progress=False
    )
    tok.train_from_iterator(synthetic_corpus(), trainer=trainer)
    tok.model = canonical_unigram(tok)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=512,
    )
    fast.save_pretrained(out_dir)
    return fast


def build_tiny_model_dir(out_dir: Path, arch: str, seed: int = 0) -> Path:
    """Save a tiny random encoder (`xlmr` or `bert`) with the tiny tokenizer into `out_dir`."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, XLMRobertaConfig, XLMRobertaForMaskedLM

    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(out_dir)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=520,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    if arch == "xlmr":
        model = XLMRobertaForMaskedLM(XLMRobertaConfig(**common, type_vocab_size=1))
    elif arch == "bert":
        model = BertForMaskedLM(BertConfig(**common, type_vocab_size=2))
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}")
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


@pytest.fixture(scope="session")
def tiny_xlmr_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random XLM-R masked-LM directory (2 layers, hidden 32) with its tokenizer."""
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-xlmr"), "xlmr")


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT masked-LM directory (2 layers, hidden 32) with the same tokenizer."""
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-bert"), "bert")


@pytest.fixture(params=["xlmr", "bert"])
def tiny_model_dir(request: pytest.FixtureRequest) -> Path:
    """Each tiny architecture in turn."""
    return request.getfixturevalue(f"tiny_{request.param}_dir")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's shared real data; tests that need it skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (CI provides it beside the checkout)")
    return SHARED_DATA


# ------------------------------------------------------------------ real servers on a tiny base

START_S = 300  # a cold start on a loaded 2-core machine takes about a minute


@dataclass
class RunningServer:
    """A server process in its own process group, its address, log and cache."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    cache: Path

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's output."""
        return self.log.read_text(errors="replace")[-chars:]

    def wait_ready(self, timeout: float = START_S) -> None:
        """Return once `/ready` answers 200; fail the test with the log if the server exits or takes too long."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/ready", timeout=5).status_code == 200:
                    return
            if time.monotonic() > deadline:
                pytest.fail(f"the server was not ready within {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left of it."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_serve(tmp: Path, *args: str, env: dict[str, str] | None = None, own_cache: bool = True) -> RunningServer:
    """`python -m langadapt.serve ARGS --port <free>`, its log under `tmp`; the caller waits and stops it.

    The environment is this one without `LANGADAPT_*` variables, plus `env`. `own_cache`: the cache goes under
    `tmp`; otherwise the environment's `LANGADAPT_CACHE` is kept (the embedded base converted once per machine).
    """
    port = free_port()
    log = tmp / "server.log"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LANGADAPT_")}
    cache = tmp / "cache"
    if own_cache:
        environ["LANGADAPT_CACHE"] = str(cache)
    elif "LANGADAPT_CACHE" in os.environ:
        environ["LANGADAPT_CACHE"] = os.environ["LANGADAPT_CACHE"]
    environ.update({"TOKENIZERS_PARALLELISM": "false", **(env or {})})
    if "--auto-build" not in args and "--no-auto-build" not in args:
        args = (*args, "--no-auto-build")  # no background ONNX exports on 2-core CI unless a test asks for them
    command = [sys.executable, "-m", "langadapt.serve", *args, "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environ, start_new_session=True)
    return RunningServer(f"http://127.0.0.1:{port}", port, process, log, cache)


@pytest.fixture(scope="session")
def launch_server() -> Callable[..., RunningServer]:
    """`launch_server(base, store, tmp, *flags, env={...})`: start a server (one worker, one thread, no defaults).

    The cache and runtime directory are under `tmp`. The caller waits for it (`wait_ready`) and stops it (`stop`).
    """

    def launch(base: Path, store: Path, tmp: Path, *flags: str, env: dict[str, str] | None = None) -> RunningServer:
        return start_serve(
            tmp,
            *("--base", str(base), "--store", str(store), "--no-defaults"),
            *("--workers", "1", "--threads", "1", "--runtime-dir", str(tmp / "runtime")),
            *flags,
            env=env,
        )

    return launch


def _mount(*args: str) -> str | None:
    """Run `mount`; why it failed (not root, no permission in this container, no mount command), or None."""
    try:
        result = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return str(err)
    return None if result.returncode == 0 else (result.stderr.strip() or f"mount exited {result.returncode}")


@pytest.fixture
def mounts() -> Iterator[Mounts]:
    """Real mounts for fault tests (a read-only bind, a small tmpfs), undone at teardown; skips where not allowed."""
    made = Mounts()
    try:
        yield made
    finally:
        for path in reversed(made.points):
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


class Mounts:
    """Mount points made by one test, newest last."""

    def __init__(self) -> None:
        self.points: list[Path] = []

    def read_only(self, path: Path) -> None:
        """Make `path` read-only in place (a bind mount of itself, remounted read-only): even root cannot write."""
        if os.geteuid() != 0:
            pytest.skip("a read-only bind mount needs root (tests write as root here: chmod would not stop them)")
        problem = _mount("--bind", str(path), str(path))
        if problem:
            pytest.skip(f"cannot bind-mount {path} in this environment: {problem}")
        self.points.append(path)
        problem = _mount("-o", "remount,bind,ro", str(path))
        if problem:
            pytest.skip(f"cannot remount {path} read-only in this environment: {problem}")

    def writable(self, path: Path) -> None:
        """Undo `read_only(path)`; a server looking into the store at that instant makes umount busy: retry."""
        for attempt in range(20):
            done = subprocess.run(["umount", str(path)], capture_output=True, text=True, timeout=30)
            if done.returncode == 0:
                break
            if attempt == 19:
                raise AssertionError(f"umount {path} failed: {done.stderr.strip()}")
            time.sleep(0.25)
        self.points.remove(path)

    def tmpfs(self, path: Path, size: str) -> None:
        """A fresh tmpfs of `size` (e.g. `1m`) at `path`: a small disk that fills up."""
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root")
        path.mkdir(parents=True, exist_ok=True)
        problem = _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
        if problem:
            pytest.skip(f"cannot mount a tmpfs in this environment: {problem}")
        self.points.append(path)

    def resize(self, path: Path, size: str) -> None:
        """Give a tmpfs made by `tmpfs` another size (space freed)."""
        problem = _mount("-o", f"remount,size={size}", str(path))
        assert problem is None, problem
