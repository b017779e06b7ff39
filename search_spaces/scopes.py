"""The paper's search scopes of ResNet-50 (Search Space Adaptation for Differentiable NAS): s, m, l, f.

No torch or NNI here: settings parsers and config checks read the scopes without building anything.
"""

from __future__ import annotations

# scope -> the stages (1-based) whose blocks are searched, counted from the deepest.
SCOPES: dict[str, tuple[int, ...]] = {"s": (4,), "m": (3, 4), "l": (2, 3, 4), "f": (1, 2, 3, 4)}
SCOPE_NAMES: tuple[str, ...] = tuple(SCOPES)
