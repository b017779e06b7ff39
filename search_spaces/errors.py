"""Errors a user can cause in this package that callers catch without importing torch or timm (the `resnas` CLI)."""


class ExportError(ValueError):
    """Weights that do not fit the spec, or a destination that cannot be written; one sentence naming the fix."""


class PretrainedError(ValueError):
    """A pretrained network resnas cannot start from (its source, its weights or a variant its blocks cannot
    express); one sentence naming the fix."""


class LatencyTableError(ValueError):
    """A latency table that cannot be read, lacks entries, or belongs to another device; one sentence naming the
    fix."""
