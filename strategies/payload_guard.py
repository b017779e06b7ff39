"""Load what NNI's manager sends as plain JSON: no payload may run code in a resnas tuner or trial.

NNI deserialises every message with `nni.load` (json_tricks plus NNI's hooks), which imports and calls what a
payload names: `{"__symbol__": "path:os.system", "__args__": [...]}` runs a command, `__nni_type__` and
`__instance_type__` import any class, `__nni_obj__` unpickles. Anything that reaches the manager's REST API
(POST /experiment/import-data above all) ends up there. resnas tuners and trials only exchange plain JSON, so
here those messages are read with `json.loads`: an object carrying a json_tricks/NNI hook key (`__name__`) is
refused, replaced by null with a warning, and the experiment goes on (the tuner ignores a record it does not
recognise).

guard_dispatcher_payloads() patches the dispatcher's modules for the life of the process (tuners call it in
__init__, before the dispatcher reads its first message); refusing_code_payloads() is scoped, for the trial's
one read of its parameters.
"""

from __future__ import annotations

import json
import logging
import re
from contextlib import contextmanager
from typing import IO, Any, Iterator

logger = logging.getLogger(__name__)

HOOK_KEY = re.compile(r"^__\w+__$")  # every json_tricks / NNI decoding hook is keyed like this
# Modules whose module-level `load` the dispatcher uses on the manager's messages.
DISPATCHER_MODULES = (
    "nni.runtime.msg_dispatcher_base",  # every incoming command
    "nni.runtime.msg_dispatcher",  # import data, metric values, trial-end hyper-parameters
    "nni.runtime.tuner_command_channel.channel",  # the newer channel API (NAS strategies)
)


class _Refused:
    """Counts refusals of one load, so that one payload logs one warning."""

    def __init__(self) -> None:
        self.keys: set[str] = set()

    def hook(self, pairs: list[tuple[str, Any]]) -> dict[str, Any] | None:
        hooks = [key for key, _ in pairs if HOOK_KEY.match(key)]
        if hooks:
            self.keys.update(hooks)
            return None
        return dict(pairs)


def plain_load(string: str | bytes | None = None, *, fp: IO[str] | None = None, **_ignored: Any) -> Any:
    """A drop-in for `nni.load` that builds only JSON values; objects carrying a decoding hook become None."""
    text = fp.read() if fp is not None else string
    refused = _Refused()
    value = json.loads(text, object_pairs_hook=refused.hook)
    if refused.keys:
        logger.warning("refused a payload from the NNI manager carrying %s (code-bearing json_tricks/NNI hooks); "
                       "it was read as null. resnas tuners and trials exchange plain JSON only.",
                       ", ".join(sorted(refused.keys)))
    return value


def guard_dispatcher_payloads() -> None:
    """Make this (dispatcher) process read every manager message with plain_load. Idempotent."""
    import importlib

    for name in DISPATCHER_MODULES:
        module = importlib.import_module(name)
        if getattr(module, "load", None) is not plain_load:
            module.load = plain_load


@contextmanager
def refusing_code_payloads() -> Iterator[None]:
    """Within the block, `nni.get_next_parameter()` reads the trial's parameters with plain_load."""
    import nni
    from nni.runtime.trial_command_channel import local_legacy

    saved = nni.load, local_legacy.load  # v3 channel calls nni.load; the legacy file channel its own import
    nni.load = local_legacy.load = plain_load
    try:
        yield
    finally:
        nni.load, local_legacy.load = saved
