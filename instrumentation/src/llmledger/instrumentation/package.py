"""The openai SDK range this instrumentation supports (mirrored by the `instruments` extra)."""

_instruments = ("openai >= 3.0.0, < 4",)
_supports_metrics = True
