"""A measured speedup as the service reports it: the medians, their 95 % intervals, and whether the
measurement is to be trusted as it stands."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Speedup:
    b1: float | None
    bN: float | None
    ci95: dict[str, tuple[float, float]] = field(default_factory=dict)
    noisy: bool = False
    noise: tuple[str, ...] = ()
    verdict: str = ""
    vs_runtime: Speedup | None = None  # against the original model, fp32, on the artifact's own runtime
    runtime: str | None = None

    @classmethod
    def of(cls, entry: dict) -> Speedup:
        """From a report entry: `results["final"]`, a step, or one of a step's runtimes."""
        ref = entry.get("runtime_baseline")
        return cls(
            b1=entry.get("speedup_b1"),
            bN=entry.get("speedup_bN"),
            ci95={k: tuple(v) for k, v in (entry.get("speedup_ci95") or {}).items()},
            noisy=bool(entry.get("noisy")),
            noise=tuple(entry.get("noise") or ()),
            verdict=entry.get("verdict", ""),
            vs_runtime=cls.of(ref) if ref else None,
            runtime=ref.get("runtime") if ref else None,
        )

    def text(self, key: str) -> str:
        value = getattr(self, key)
        if value is None:
            return "-"
        if key in self.ci95:
            lo, hi = self.ci95[key]
            return f"{value:.2f}x [{lo:.2f}-{hi:.2f}]"
        return f"{value:.2f}x"

    def __str__(self) -> str:
        text = f"{self.text('b1')} at batch 1, {self.text('bN')} at batch N"
        if self.vs_runtime is not None:
            text += (
                f"; {self.vs_runtime.text('b1')} / {self.vs_runtime.text('bN')} vs the original on {self.runtime} fp32"
            )
        if self.noisy:
            text += "; NOISY: " + "; ".join(self.noise)
        return text
