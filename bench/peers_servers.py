"""The peers of bench/peers.py behind one minimal HTTP layer: FastAPI on uvicorn, one process, one event loop.

    python bench/peers_servers.py adapters-paper --port P --store DIR --stacks FILE [--threads N]
    python bench/peers_servers.py pipeline-per-stack --port P --store DIR --stacks FILE [--threads N]

Both answer `POST /v1/{task}` with `{"lang": code, "texts": [...]}` as `{"task": task, "results": [...]}`
(classification: label and score per text; NER: one label per token, no span decoding: less work than
langadapt's decoding, so in the peers' favour) and `GET /ready`. The stacks are the same store adapters the
langadapt server serves (`store_view(--store)`: the packaged defaults under the given store), listed in
`--stacks` (JSON `[[task, language], ...]`), all loaded at start-up.

- `adapters-paper`: the seed paper's way. One `AutoAdapterModel` with every adapter loaded; requests gathered for
  up to `batch_timeout` (or `max_batch_size` requests, langadapt's own defaults), grouped by stack, and
  each group run as `Stack(language, task)` set active then batched forwards of up to 16 texts, on one
  inference thread.
- `pipeline-per-stack`: what a newcomer writes. A transformers `pipeline` per stack (token- or text-classification)
  over that one model, called per request (the pipeline's default batch size 1) with the stack set active
  under a lock, on one inference thread. The pipelines share the model's weights (a pipeline per stack with
  its own model copy would need a base per stack: 470 MB each in fp32 here).
- `ort-per-stack`: what a Triton model repository does: one ONNX Runtime session per stack on the fused graph
  `langadapt export fused` made for it (`--artifacts`), requests gathered and batched per stack as
  `adapters-paper` does; the process imports no torch.
- `optimum-per-stack`: what an optimum user does: `ORTModelForSequenceClassification` /
  `ORTModelForTokenClassification` per stack, on the same fused graphs (with the base's config and the stack's
  labels beside each), batched per stack as `adapters-paper` does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import threading
from collections import defaultdict
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

PAPER_BATCH = 16  # texts per forward, as the seed paper's evaluation batches


class Request(BaseModel):
    lang: str
    texts: list[str]


def load_stacks(
    store: str, stacks: list[tuple[str, str]]
) -> tuple[Any, Any, dict[tuple[str, str], tuple[str, str | None]]]:
    """The base as an adapters model with every stack's adapters and heads loaded; its tokenizer; stack names."""
    from langadapt.models.base import load_tokenizer, resolve_base_model
    from langadapt.models.modeling import load_adapter_model, load_language_adapter, load_task_adapter, module_name
    from langadapt.models.store_view import store_view

    info = resolve_base_model("embedded")
    model = load_adapter_model(info)
    view = store_view(store)
    names: dict[tuple[str, str], tuple[str, str | None]] = {}
    languages: set[str] = set()
    for task, language in stacks:
        manifest = load_task_adapter(model, view, f"{language}-{task}")
        lang_name = None
        if manifest.language_adapter is not None:
            lang_name = module_name(manifest.language_adapter.id)
            if lang_name not in languages:
                load_language_adapter(model, view, manifest.language_adapter.id, manifest.language_adapter.version)
                languages.add(lang_name)
        names[(task, language)] = (module_name(manifest.id), lang_name)
    tokenizer = load_tokenizer(info)
    return model, tokenizer, names


class PaperBatcher:
    """Requests gathered for a short while, grouped by stack, each group batched under `set_active_adapters`."""

    def __init__(self, model: Any, tokenizer: Any, names: dict[tuple[str, str], tuple[str, str | None]]) -> None:
        from langadapt.serve.settings import ServerSettings

        defaults = ServerSettings()
        self.model, self.tokenizer, self.names = model, tokenizer, names
        self.max_requests, self.timeout = defaults.max_batch_size, defaults.batch_timeout
        self.queue: asyncio.Queue[tuple[tuple[str, str], list[str], asyncio.Future[list[Any]]]] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(1)

    async def submit(self, key: tuple[str, str], texts: list[str]) -> list[Any]:
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        await self.queue.put((key, texts, future))
        return await future

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            deadline = loop.time() + self.timeout
            while len(items) < self.max_requests and (left := deadline - loop.time()) > 0:
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), left))
                except TimeoutError:
                    break
            groups: dict[tuple[str, str], list[str]] = defaultdict(list)
            for key, texts, _ in items:
                groups[key].extend(texts)
            try:
                outputs = await loop.run_in_executor(self.executor, self.run_groups, dict(groups))
            except Exception as err:  # every waiting request gets the error
                for _, _, future in items:
                    future.set_exception(err)
                continue
            taken: dict[tuple[str, str], int] = defaultdict(int)
            for key, texts, future in items:
                start = taken[key]
                future.set_result(outputs[key][start : start + len(texts)])
                taken[key] += len(texts)

    def run_groups(self, groups: dict[tuple[str, str], list[str]]) -> dict[tuple[str, str], list[Any]]:
        import torch
        from adapters.composition import Stack

        out: dict[tuple[str, str], list[Any]] = {}
        for key, texts in groups.items():
            task_name, lang_name = self.names[key]
            self.model.set_active_adapters(Stack(lang_name, task_name) if lang_name else Stack(task_name))
            self.model.active_head = task_name
            labels = self.model.get_labels_dict(task_name)
            rows: list[Any] = []
            for i in range(0, len(texts), PAPER_BATCH):
                batch = self.tokenizer(
                    texts[i : i + PAPER_BATCH], padding=True, truncation=True, max_length=512, return_tensors="pt"
                )
                with torch.inference_mode():
                    logits = self.model(**batch).logits
                rows.extend(decode(key[0], labels, logits.numpy(), batch["attention_mask"].numpy()))
            out[key] = rows
        return out


class OrtPerStack(PaperBatcher):
    """One ONNX Runtime session per stack (a fused graph each: N copies of the base), requests batched per stack."""

    def __init__(self, tokenizer: Any, runtimes: dict[tuple[str, str], Any]) -> None:
        super().__init__(None, tokenizer, {})
        self.runtimes = runtimes

    def run_groups(self, groups: dict[tuple[str, str], list[str]]) -> dict[tuple[str, str], list[Any]]:
        out: dict[tuple[str, str], list[Any]] = {}
        for key, texts in groups.items():
            labels = self.labels(key)
            rows: list[Any] = []
            for i in range(0, len(texts), PAPER_BATCH):
                batch = self.tokenizer(
                    texts[i : i + PAPER_BATCH], padding=True, truncation=True, max_length=512, return_tensors="np"
                )
                logits = self.logits(key, batch["input_ids"], batch["attention_mask"])
                rows.extend(decode(key[0], labels, logits, batch["attention_mask"]))
            out[key] = rows
        return out

    def labels(self, key: tuple[str, str]) -> dict[int, str]:
        """The stack's labels by class index."""
        return dict(enumerate(self.runtimes[key].labels))

    def logits(self, key: tuple[str, str], ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The stack's logits for one padded batch."""
        return np.asarray(self.runtimes[key].run(ids, mask))


class OptimumPerStack(OrtPerStack):
    """optimum's `ORTModelFor{Sequence,Token}Classification` per stack, on the same fused graphs, batched per stack."""

    def labels(self, key: tuple[str, str]) -> dict[int, str]:
        """The labels of the model's config."""
        return {int(i): label for i, label in self.runtimes[key].config.id2label.items()}

    def logits(self, key: tuple[str, str], ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The model's logits, called as an optimum user does (torch tensors in)."""
        import torch

        output = self.runtimes[key](input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
        return np.asarray(output.logits)


def optimum_model(task: str, artifact: Path, folder: Path) -> Any:
    """An optimum ORTModel on a fused artifact: its graph and the base's config with the stack's labels."""
    import onnxruntime as ort
    from optimum.onnxruntime import ORTModelForSequenceClassification, ORTModelForTokenClassification

    from langadapt.models.base import resolve_base_model
    from langadapt.models.kinds import GRAPH_FILE, MANIFEST_FILE

    labels = json.loads((artifact / MANIFEST_FILE).read_text())["labels"]
    config = json.loads((resolve_base_model("embedded").path / "config.json").read_text())
    config.update(id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    for name in (GRAPH_FILE, f"{GRAPH_FILE}.data"):  # the graph and its weights file (if it has one)
        source, link = artifact / name, folder / ("model.onnx" + name[len(GRAPH_FILE) :])
        if source.exists() and not link.exists():
            link.symlink_to(source.resolve())
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    kind = ORTModelForTokenClassification if task == "ner" else ORTModelForSequenceClassification
    return kind.from_pretrained(folder, provider="CPUExecutionProvider", session_options=options)


def decode(task: str, labels: dict[int, str], logits: np.ndarray, mask: np.ndarray) -> list[dict[str, Any]]:
    """Argmax label and score per text (classification) or a label per real token (NER; no span decoding)."""
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    probs = shifted / shifted.sum(-1, keepdims=True)
    best, scores = probs.argmax(-1), probs.max(-1)
    if task == "ner":
        return [
            {"tags": [labels[int(t)] for t, m in zip(row, row_mask, strict=True) if m]}
            for row, row_mask in zip(best, mask, strict=True)
        ]
    return [{"label": labels[int(b)], "score": float(p)} for b, p in zip(best, scores, strict=True)]


class NewcomerPipelines:
    """A transformers pipeline per stack, one request at a time, the stack set active under a lock."""

    def __init__(self, model: Any, tokenizer: Any, names: dict[tuple[str, str], tuple[str, str | None]]) -> None:
        from transformers import pipeline
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(hf_logging.CRITICAL)  # "BertAdapterModel is not supported for ...": it works
        self.model, self.names = model, names
        kinds: dict[str, Any] = {
            "ner": "token-classification",
            "sentiment": "text-classification",
            "topic": "text-classification",
        }
        self.pipelines = {key: pipeline(kinds[key[0]], model=model, tokenizer=tokenizer) for key in names}
        self.lock = threading.Lock()
        self.executor = ThreadPoolExecutor(1)

    async def submit(self, key: tuple[str, str], texts: list[str]) -> list[Any]:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.call, key, texts)

    def call(self, key: tuple[str, str], texts: list[str]) -> list[Any]:
        from langadapt.models.modeling import activate

        task_name, lang_name = self.names[key]
        with self.lock:
            activate(self.model, task_name, lang_name)
            found = self.pipelines[key](texts)
        return json.loads(json.dumps(found, default=float))  # numpy scores to floats


def build_app(system: str, store: str, stacks: list[tuple[str, str]], artifacts: dict[tuple[str, str], str]) -> Any:
    from fastapi import FastAPI, HTTPException

    runner: PaperBatcher | NewcomerPipelines
    if system == "ort-per-stack":  # no torch model in this process: only the sessions and a tokenizer
        from langadapt.export.runtime import FusedRuntime
        from langadapt.models.base import load_tokenizer, resolve_base_model

        runtimes = {key: FusedRuntime(artifacts[key], device="cpu", threads=os.cpu_count()) for key in stacks}
        runner = OrtPerStack(load_tokenizer(resolve_base_model("embedded")), runtimes)
        names: Any = runtimes
    elif system == "optimum-per-stack":  # optimum's ORTModel classes on the same graphs, no adapters library
        from langadapt.models.base import load_tokenizer, resolve_base_model

        models = {
            key: optimum_model(key[0], Path(artifacts[key]), Path(artifacts[key]).parent / f"optimum-{'-'.join(key)}")
            for key in stacks
        }
        runner = OptimumPerStack(load_tokenizer(resolve_base_model("embedded")), models)
        names = models
    else:
        model, tokenizer, names = load_stacks(store, stacks)
        runner = (
            PaperBatcher(model, tokenizer, names)
            if system == "adapters-paper"
            else NewcomerPipelines(model, tokenizer, names)
        )

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        batcher = asyncio.create_task(runner.run_forever()) if isinstance(runner, PaperBatcher) else None
        yield
        if batcher is not None:
            batcher.cancel()

    app = FastAPI(lifespan=lifespan)

    @app.get("/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/v1/{task}")
    async def label(task: str, request: Request) -> dict[str, Any]:
        key = (task, request.lang)
        if key not in names:
            raise HTTPException(404, f"no stack for {task} in {request.lang}")
        return {"task": task, "results": await runner.submit(key, request.texts)}

    return app


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "system", choices=["adapters-paper", "pipeline-per-stack", "ort-per-stack", "optimum-per-stack"]
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--stacks", type=Path, required=True, help="JSON [[task, language], ...]")
    parser.add_argument("--artifacts", type=Path, help="ort-per-stack: JSON [[task, language, fused artifact dir]]")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    stacks = [(task, language) for task, language in json.loads(args.stacks.read_text())]
    artifacts = {(t, lang): d for t, lang, d in json.loads(args.artifacts.read_text())} if args.artifacts else {}
    app = build_app(args.system, args.store, stacks, artifacts)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
