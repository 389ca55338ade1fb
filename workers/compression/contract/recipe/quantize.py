"""`quantize` step configs: one class per scheme, each declaring only the options that scheme takes,
discriminated on `scheme` (the wire JSON is the flat object it always was)."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Annotated, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from ..formats import EAGER_FORMATS, ModelFormat
from ..inspection import ModelInfo
from ..vocabulary import Runtime
from .layers import unmatched_exclude

TORCH_FORMATS = EAGER_FORMATS
RECOMMEND_BUDGET = 0.01  # accuracy drop allowed when choosing among runtimes without max_accuracy_drop

SCHEME_HELP = (
    "int8_static: int8 weights and calibrated activations (needs a dataset); int8_dynamic: int8 weights, "
    "activations quantized per batch; int8_qat: int8 with quantization-aware fine-tuning (labels, or "
    "distillation from the fp32 model); int8_weight_only / int4_weight_only: low-bit weights, fp32 compute; "
    "fp16 / bf16: half precision; binary / ternary: 1-bit / 2-bit weights with a scale per output channel"
)


class _Scheme(BaseModel):
    """Options every scheme takes. Subclasses add their own and name the formats they accept."""

    # each scheme its own title ("quantize Int8Static"): client generators name their classes after it
    model_config = ConfigDict(extra="forbid", model_title_generator=lambda cls: f"quantize {cls.__name__}")
    FORMATS: ClassVar[frozenset[ModelFormat]] = TORCH_FORMATS
    RUNTIMES: ClassVar[tuple[str, ...]] = ()  # runtimes besides the default that can execute the scheme fast

    method: Literal["quantize"] = "quantize"
    max_accuracy_drop: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="largest accuracy loss allowed (absolute, 0.01 = 1 point; agreement with the fp32 model "
        "when the data has no labels; a causal language model's relative perplexity increase, 0.05 = +5 %). Over it, the most sensitive layers stay in full precision until it "
        "holds; if none fits, the step fails and stores the best candidate. Needs a dataset. Without it, "
        "int8_static, int8_dynamic and int8_weight_only with data are held to 0.01 the same way, without "
        "failing when no mix fits (a note says so).",
    )
    exclude: list[str] = Field([], description="layers kept in full precision (names or globs, e.g. 'head.*')")

    @model_validator(mode="before")
    @classmethod
    def _options_fit_scheme(cls, data):
        # an option of another scheme gets a message that says which schemes take it, not "extra field"
        if isinstance(data, dict):
            runtime = data.get("runtime")
            if "runtime" not in cls.model_fields and runtime in (None, "auto"):
                data = {k: v for k, v in data.items() if k != "runtime"}  # "auto" is every scheme's default
            for key, value in list(data.items()):
                if key not in cls.model_fields and key != "runtime" and (takers := OPTION_SCHEMES.get(key)):
                    if value is None or value == BY_SCHEME[takers[0]].model_fields[key].default:
                        # left at its default (recipes stored before the schemes had classes of their own)
                        data = {k: v for k, v in data.items() if k != key}
                        continue
                    raise ValueError(f"{key} applies to {_and(takers)} only")
            if runtime not in (None, "auto", *cls.RUNTIMES):
                choices = f"; choose one of {', '.join(cls.RUNTIMES)} or auto" if cls.RUNTIMES else "; leave it auto"
                raise ValueError(f"runtime {runtime!r} does not apply to {data.get('scheme')}{choices}")
        return data

    @property
    def epochs(self) -> int:
        return 0

    def summary(self) -> str:
        """A few words a job list shows for this step."""
        return f"quantize {getattr(self, 'scheme', '')}".strip()

    def needs_data(self) -> str | None:
        if self.max_accuracy_drop is not None:
            return "max_accuracy_drop is checked on data: add a dataset"
        return None

    def trains(self) -> bool:
        return self.epochs > 0


class _Int8Activations(BaseModel):
    reduce_range: bool | None = Field(
        None,
        description="7-bit activations so u8xs8 products cannot saturate on CPUs without VNNI; default: on such "
        "CPUs both are tried and reduce_range is used only when it measures more accurate",
    )


class _Calibrated(BaseModel):
    calibration_batches: int = Field(32, ge=1, le=10_000, description="batches of 32 to calibrate on")


class _FineTuned(BaseModel):
    DEFAULT_EPOCHS: ClassVar[int] = 0
    finetune_epochs: int | None = Field(
        None,
        ge=0,
        le=200,
        description="training epochs (int8_qat default 3; binary / ternary: straight-through-estimator "
        "fine-tuning, default 0). Uses labels, or distils from the fp32 model without them.",
    )
    learning_rate: float = Field(1e-4, gt=0, le=1.0, description="fine-tuning learning rate (AdamW, cosine decay)")
    batch_size: int = Field(64, ge=1, le=4096, description="fine-tuning batch size")

    @property
    def epochs(self) -> int:
        return self.finetune_epochs if self.finetune_epochs is not None else self.DEFAULT_EPOCHS

    def needs_data(self) -> str | None:
        if self.epochs:
            return f"fine-tuning {self.scheme} weights needs a dataset"
        return super().needs_data()


class _Grouped(BaseModel):
    group_size: int | None = Field(
        None,
        ge=8,
        le=4096,
        description="inputs sharing one scale (default: int4 32, int8 one scale per output channel)",
    )


class Int8Dynamic(_Int8Activations, _Scheme):
    """int8 weights, activations quantized per batch."""

    FORMATS: ClassVar = TORCH_FORMATS | {ModelFormat.ONNX}
    scheme: Literal["int8_dynamic"]


class Int8Static(_Calibrated, _Int8Activations, _Scheme):
    """int8 weights and activations calibrated on the dataset."""

    FORMATS: ClassVar = TORCH_FORMATS | {ModelFormat.ONNX}
    RUNTIMES: ClassVar = (Runtime.INDUCTOR, Runtime.ONNXRUNTIME, Runtime.OPENVINO)
    scheme: Literal["int8_static"]
    runtime: Literal["auto", Runtime.INDUCTOR, Runtime.ONNXRUNTIME, Runtime.OPENVINO] = Field(
        "auto",
        description="what runs the int8 model. auto: every runtime that can (inductor, onnxruntime and OpenVINO "
        "through NNCF for PyTorch models; onnxruntime and OpenVINO for ONNX models), each measured, the fastest "
        "within the accuracy budget at the batch size `objective` names recommended",
    )
    objective: Literal["throughput", "latency"] = Field(
        "throughput",
        description="which speed picks the recommended runtime: throughput (the larger batch) or latency (batch 1)",
    )
    compare_peers: bool = Field(
        False,
        description="also build and measure, in the same run, what a user would get from the field's one-call "
        "recipes: onnxruntime quantize_static (QDQ, per-channel) and NNCF quantize on OpenVINO; the report "
        "ranks the recommended artifact against the better of them",
    )

    def needs_data(self) -> str | None:
        return "int8_static calibrates activation ranges on data: add a dataset (labels are not needed)"


class Int8QAT(_FineTuned, _Calibrated, _Int8Activations, _Scheme):
    """int8 with quantization-aware fine-tuning."""

    DEFAULT_EPOCHS: ClassVar = 3
    RUNTIMES: ClassVar = (Runtime.INDUCTOR,)
    scheme: Literal["int8_qat"]
    runtime: Literal["auto", Runtime.INDUCTOR] = Field("auto", description="what runs the int8 model (inductor)")

    def needs_data(self) -> str | None:
        return "int8_qat trains on data: add a dataset (labels, or none to distil from the fp32 model)"


class Int8WeightOnly(_Grouped, _Scheme):
    """int8 weights, fp32 compute."""

    scheme: Literal["int8_weight_only"]


class Int4WeightOnly(_Grouped, _Scheme):
    """int4 weights (two per byte), fp32 compute."""

    scheme: Literal["int4_weight_only"]


class Fp16(_Scheme):
    """Half precision (IEEE fp16) weights and compute."""

    FORMATS: ClassVar = TORCH_FORMATS | {ModelFormat.TORCHSCRIPT}
    scheme: Literal["fp16"]


class Bf16(_Scheme):
    """bfloat16 weights and compute."""

    FORMATS: ClassVar = TORCH_FORMATS | {ModelFormat.TORCHSCRIPT}
    scheme: Literal["bf16"]


class _Signs(_FineTuned, _Scheme):
    keep_first_last: bool = Field(True, description="keep the first and last layer in full precision")


class Binary(_Signs):
    """1-bit weights (sign x mean |W| per output channel)."""

    scheme: Literal["binary"]


class Ternary(_Signs):
    """2-bit weights {-1, 0, +1} x a scale per output channel."""

    scheme: Literal["ternary"]


SCHEMES: tuple[type[_Scheme], ...] = (
    Int8Dynamic,
    Int8Static,
    Int8QAT,
    Int8WeightOnly,
    Int4WeightOnly,
    Fp16,
    Bf16,
    Binary,
    Ternary,
)
Scheme = Literal[
    "int8_dynamic",
    "int8_static",
    "int8_qat",
    "int8_weight_only",
    "int4_weight_only",
    "fp16",
    "bf16",
    "binary",
    "ternary",
]
BY_SCHEME: dict[str, type[_Scheme]] = {c.model_fields["scheme"].annotation.__args__[0]: c for c in SCHEMES}
FORMATS = {name: cls.FORMATS for name, cls in BY_SCHEME.items()}
# schemes whose int8 graph a runtime can execute fast; the others run in eager PyTorch
RUNTIMES = {name: cls.RUNTIMES for name, cls in BY_SCHEME.items() if cls.RUNTIMES}
# option -> the schemes that take it, for the message when a recipe gives it to another scheme
OPTION_SCHEMES: dict[str, list[str]] = {}
for _name, _cls in BY_SCHEME.items():
    for _field in _cls.model_fields:
        if _field not in _Scheme.model_fields and _field != "scheme":
            OPTION_SCHEMES.setdefault(_field, []).append(_name)

QuantizeStep = Annotated[Union[SCHEMES], Field(discriminator="scheme")]  # noqa: UP007
QuantizeConfig = _Scheme  # the base every scheme's config is an instance of
_ADAPTER: TypeAdapter = TypeAdapter(QuantizeStep)


def quantize_step(scheme: str, **options) -> _Scheme:
    """A typed quantize config from a scheme name and its options (as a recipe would give them)."""
    return _ADAPTER.validate_python({"method": "quantize", "scheme": scheme, **options})


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def formats(step: _Scheme) -> frozenset[ModelFormat]:
    return step.FORMATS


def output_format(step: _Scheme, fmt: ModelFormat) -> ModelFormat:
    if getattr(step, "runtime", "auto") == Runtime.OPENVINO:
        return ModelFormat.OPENVINO
    if fmt in (ModelFormat.TORCHSCRIPT, ModelFormat.ONNX):
        return fmt
    if getattr(step, "runtime", "auto") == Runtime.ONNXRUNTIME:
        return ModelFormat.ONNX
    # eager sources (weights + architecture, Hugging Face) come out as torch.export programs
    return ModelFormat.PT2


def check_model(step: _Scheme, info: ModelInfo) -> str | None:
    """`exclude` must name layers the model has (inspection's layer list; ONNX uploads have none)."""
    names = [layer.name for layer in info.layers or []]
    if not names:
        return None
    unmatched = unmatched_exclude(step.exclude, names)
    if unmatched:
        return unmatched
    if all(any(fnmatchcase(n, p) for p in step.exclude) for n in names):
        return "every layer is excluded: nothing is left to quantize"
    return None


def check_order(step: _Scheme, earlier: list[tuple[BaseModel, ModelFormat]]) -> str | None:
    for s, _ in earlier:
        if isinstance(s, _Scheme):
            return (
                f"the model is already quantized ({s.scheme}) by an earlier step; a model is quantized once: "
                "keep one quantize step"
            )
    return None
