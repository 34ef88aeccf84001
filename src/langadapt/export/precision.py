"""Graph optimisation and precision: ONNX Runtime's transformer fusions, dynamic int8, fp16 for the CUDA provider.

Defaults, chosen by measurement (docs/performance.md, "Export"):

- offline transformer fusions (`optimize_graph`) only for fp16: on CPU they were no faster than ONNX Runtime's
  own session-time fusions (fp32 and int8 alike), on CUDA the fused attention and LayerNorm kernels are the point;
- int8 is dynamic with **per-channel** int8 weights (per-tensor flipped 8% of labels on random text, per-channel
  none) and the embedding table quantised too (the file shrinks 3-4x); adapter-sized products stay float
  (negligible time). Two recipes, tried in `INT8_RECIPES` order by the exporter until one passes the parity
  check: `all` quantises every projection; `ffn-float` also keeps the feed-forward output projections in float,
  whose GELU inputs have outliers that per-tensor activation scales crush (on a trained topic adapter it halved
  the largest logit error and cut label flips 2.5x, for about a third of the int8 speed-up);
- fp16 keeps float32 inputs and outputs, so callers never cast.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from langadapt.export.errors import ExportError, ParityError

__all__ = [
    "INT8_RECIPES",
    "PRECISIONS",
    "QUANTIZATIONS",
    "GraphCheck",
    "Precision",
    "Quantization",
    "checked_precisions",
    "convert_fp16",
    "default_optimize",
    "float_kept_matmuls",
    "optimize_graph",
    "precision_label",
    "quantize_int8",
]

Precision = Literal["fp32", "fp16"]
Quantization = Literal["int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16")
QUANTIZATIONS: tuple[str, ...] = ("int8",)
INT8_RECIPES: tuple[str, ...] = ("all", "ffn-float")  # fastest first; the exporter keeps the first that passes


def precision_label(precision: str, quantize: str | None) -> str:
    """One word for what an artifact computes in: `fp32`, `fp16` or `int8`; refuses combinations that do not exist."""
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}", f"choose one of {', '.join(PRECISIONS)}")
    if quantize is None:
        return precision
    if quantize not in QUANTIZATIONS:
        raise ExportError(f"unknown quantization {quantize!r}", f"choose one of {', '.join(QUANTIZATIONS)} or none")
    if precision != "fp32":
        raise ExportError(
            f"--quantize {quantize} applies to fp32 graphs, not {precision}",
            "int8 is for CPU and fp16 for CUDA: pick one of them",
        )
    return quantize


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide the optimiser's and quantiser's progress chatter (shape-inference notices, pre-processing advice)."""
    names = ["onnxruntime.transformers", "onnx_model", "fusion_base", "root", ""]
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the optimiser prints shape-inference failures
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def optimize_graph(source: Path, target: Path, *, num_heads: int, hidden_size: int, use_gpu: bool = False) -> dict:
    """Apply ONNX Runtime's BERT fusions (attention, skip-LayerNorm, bias-GELU) offline; return the fused-op counts."""
    from onnxruntime.transformers.optimizer import optimize_model

    with _quiet():
        model = optimize_model(
            str(source),
            model_type="bert",
            num_heads=num_heads,
            hidden_size=hidden_size,
            opt_level=0,
            use_gpu=use_gpu,
        )
        model.save_model_to_file(str(target))
    return {op: n for op, n in model.get_fused_operator_statistics().items() if n}


def default_optimize(precision: str) -> bool:
    """Whether offline fusions are applied by default: for fp16 (CUDA) graphs only, as measured."""
    return precision == "fp16"


_GELU_OPS = ("Erf", "Gelu", "BiasGelu", "FastGelu")


def float_kept_matmuls(path: Path) -> dict[str, list[str]]:
    """MatMuls int8 leaves in float: feed-forward output projections (fed by a GELU) and adapter-sized ones."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    producer = {out: node for node in model.graph.node for out in node.output}
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in shapes]
    if not matmuls:
        return {"ffn_output": [], "adapter_sized": []}
    dims = [d for n in matmuls for d in shapes[n.input[1]]]
    hidden = max(set(dims), key=dims.count)  # the hidden size is the commonest weight dimension

    def after_gelu(node: Any) -> bool:
        frontier = [node.input[0]]
        for _ in range(4):  # Gelu may be one fused node or the Div-Erf-Add-Mul chain of a traced graph
            parents = [producer[t] for t in frontier if t in producer]
            if any(p.op_type in _GELU_OPS for p in parents):
                return True
            frontier = [t for p in parents for t in p.input]
        return False

    ffn = [n.name for n in matmuls if after_gelu(n)]
    small = [n.name for n in matmuls if min(shapes[n.input[1]]) <= hidden // 4 and n.name not in ffn]
    return {"ffn_output": ffn, "adapter_sized": small}


def quantize_int8(source: Path, target: Path, recipe: str = "all") -> dict[str, Any]:
    """Dynamic int8 quantisation for CPU (int8 weights per channel, activations at run time); what stayed float."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if recipe not in INT8_RECIPES:
        raise ExportError(f"unknown int8 recipe {recipe!r}", f"choose one of {', '.join(INT8_RECIPES)}")
    kept = float_kept_matmuls(source)
    if recipe == "all":
        kept["ffn_output"] = []
    with _quiet():
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=kept["ffn_output"] + kept["adapter_sized"],
            extra_options={
                "MatMulConstBOnly": True,  # adapter weights fed as graph inputs (swappable) stay float
                "DefaultTensorType": onnx.TensorProto.FLOAT,  # fused contrib ops defeat type inference
            },
        )
    return {
        "recipe": recipe,
        "type": "dynamic",
        "weights": "int8, symmetric, per channel",
        "activations": "uint8, per tensor, at run time",
        "float_matmuls": {k: len(v) for k, v in kept.items()},
    }


def convert_fp16(source: Path, target: Path) -> None:
    """Convert weights and compute to float16 for the CUDA provider, keeping float32 inputs and outputs."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    with _quiet():
        model = OnnxModel(onnx.load(str(source)))
        model.convert_float_to_float16(keep_io_types=True, use_symbolic_shape_infer=True)
        model.save_model_to_file(str(target))


GraphCheck = Callable[..., dict[str, Any]]  # check(path, precision label, device="cpu") -> figures; raises ParityError


def checked_precisions(
    raw: Path,
    work: Path,
    check: GraphCheck,
    *,
    precision: str,
    optimize: bool | None,
    num_heads: int,
    hidden_size: int,
) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Optimise (if asked and exact), then quantise or convert a traced fp32 graph, checking every graph kept.

    Returns (final graph, parity figures per precision, steps taken); a failed check of the final precision raises
    `ParityError`. The optimiser's output is dropped, with the reason in the steps, when it is not exact.
    """
    from langadapt.export.runtime import check_device

    parity: dict[str, Any] = {}
    steps: dict[str, Any] = {"optimizer": {"applied": False}}
    fp32 = raw
    if optimize is None:
        optimize = default_optimize(precision)
    if optimize:
        candidate = work / "optimized.onnx"
        fused_ops = optimize_graph(raw, candidate, num_heads=num_heads, hidden_size=hidden_size)
        try:
            parity["fp32"] = check(candidate, "fp32")
            fp32 = candidate
            steps["optimizer"] = {"applied": True, "fused_ops": fused_ops}
        except ParityError as err:  # the unfused graph is still exact: keep it, say why
            steps["optimizer"] = {"applied": False, "rejected": err.message, "figures": err.figures}
    if "fp32" not in parity:
        parity["fp32"] = check(raw, "fp32")
    final = fp32
    if precision == "int8":
        final, parity["int8"], steps["quantization"] = _first_passing_int8(fp32, work, check)
    elif precision == "fp16":
        final = work / "fp16.onnx"
        convert_fp16(fp32, final)
        parity["fp16"] = check(final, "fp16", check_device("fp16"))
        steps["fp16"] = {"io_types": "float32", "checked_on": parity["fp16"]["checked_on"]}
    return final, parity, steps


def _first_passing_int8(fp32: Path, work: Path, check: GraphCheck) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """The first int8 recipe (fastest first) whose graph passes the check: (graph, figures, recipe details)."""
    rejected: list[dict[str, Any]] = []
    for recipe in INT8_RECIPES:
        target = work / f"int8-{recipe}.onnx"
        details = quantize_int8(fp32, target, recipe)
        try:
            figures = check(target, "int8")
        except ParityError as err:
            rejected.append({"recipe": recipe, "reason": err.message, "figures": err.figures})
            continue
        return target, figures, {**details, "rejected": rejected}
    reasons = "; ".join(f"{r['recipe']}: {r['reason']}" for r in rejected)
    raise ParityError(
        f"no int8 recipe matches the reference ({reasons})",
        "nothing was published; export fp32 (or fp16 for CUDA): int8 error flips too many of this adapter's "
        "near-tied predictions",
        figures={**rejected[-1]["figures"], "rejected": rejected},
    )
