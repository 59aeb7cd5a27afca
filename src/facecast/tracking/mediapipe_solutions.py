"""MediaPipe's solutions (face mesh, hands, pose, selfie segmentation), imported without loading the
libraries they import for features facecast never calls.

Importing any part of `mediapipe` imports all of it: drawing_utils imports matplotlib.pyplot at its top
for a 3-D plotting helper, and the audio tasks import sounddevice (PortAudio). Measured on 2 cores,
they were 0.75 s of the 1.35 s of CPU that importing the face mesh took, paid at every start of the
daemon, of `facecast render`, of each job worker. Both are registered first as deferred modules:
the name is bound where mediapipe imports it, and the real module is imported on the first use of
any of its attributes (whoever uses it then gets the real thing, with its own errors).

The standard library's importlib.util.LazyLoader cannot do this on Python 3.11: an `import` of an
already registered lazy module reads its `__spec__`, which loads it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from importlib.machinery import ModuleSpec
from types import ModuleType

DEFERRED = ("matplotlib.pyplot", "sounddevice")
_lock = threading.RLock()  # re-entrant: loading pyplot first loads its deferred parent, matplotlib


class DeferredModule(ModuleType):
    """Stands in for a module until one of its attributes is first asked for; then imports it and
    hands every lookup to it. Its `__spec__` is the real one for a top-level package, a bare one
    naming the module below it (never None: `importlib.util.find_spec`, which diffusers calls to see
    what is installed, refuses a module without one)."""

    def __init__(self, name: str, spec: ModuleSpec) -> None:
        super().__init__(name)
        self.__spec__ = spec
        self.__dict__["_real"] = None

    def __getattr__(self, attr: str):  # only called for attributes the stand-in does not have
        real = self.__dict__["_real"]
        if real is None:
            with _lock:
                real = self.__dict__["_real"]
                if real is None:
                    if sys.modules.get(self.__name__) is self:
                        del sys.modules[self.__name__]
                    real = importlib.import_module(self.__name__)
                    self.__dict__["_real"] = real
        return getattr(real, attr)


def _defer(name: str) -> ModuleType | None:
    """A stand-in for `name` and for each package above it that is not imported yet (`import a.b as c`
    imports package a, then reads its attribute b). Nothing for a package that is not installed."""
    if name in sys.modules:
        return None
    parent, _, child = name.rpartition(".")
    if not parent:
        spec = importlib.util.find_spec(name)  # a top-level name: found without importing anything
        if spec is None:
            return None
        module = DeferredModule(name, spec)
        sys.modules[name] = module
        return module
    if parent not in sys.modules and _defer(parent) is None:
        return None
    module = DeferredModule(name, ModuleSpec(name, None))
    sys.modules[name] = module
    above = sys.modules[parent]
    if isinstance(above, DeferredModule):
        above.__dict__[child] = module
    return module


def solution(name: str) -> ModuleType:
    """`mediapipe.python.solutions.<name>` (ImportError as the import raises it)."""
    if "mediapipe" not in sys.modules:
        for deferred in DEFERRED:
            _defer(deferred)
    return importlib.import_module(f"mediapipe.python.solutions.{name}")
