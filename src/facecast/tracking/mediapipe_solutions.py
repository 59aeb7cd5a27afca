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


class SolutionCall:
    """`solution.process(rgb).<output>` for one output stream of a MediaPipe solution (FaceMesh,
    Hands), without what `process` rebuilds on every call: a namedtuple class (collections.namedtuple
    execs its source: 0.33 ms of the calling thread's CPU a frame, measured with the face mesh at 720p).
    The same steps on the same graph: the image packet at the next simulated timestamp, wait for the
    graph, read the output stream.

    These are SolutionBase's own attributes in mediapipe 0.10.21 (the pinned version). A mediapipe
    without them gets the plain `process` call: the same output, only the namedtuple's cost.
    """

    def __init__(self, solution, output: str) -> None:
        self._solution, self._output = solution, output
        try:
            (self._stream, self._input_type), *more = solution._input_stream_type_info.items()
            self._output_type = solution._output_stream_type_info[output]
            needed = (solution._graph, solution._graph_outputs, solution._make_packet, solution._get_packet_content)
            self._direct = not more and None not in needed and hasattr(solution, "_simulated_timestamp")
        except (AttributeError, KeyError, TypeError, ValueError):
            self._direct = False

    @property
    def direct(self) -> bool:
        """False where this mediapipe's solution is called through process()."""
        return self._direct

    def __call__(self, rgb):
        solution = self._solution
        if not self._direct:
            return getattr(solution.process(rgb), self._output)
        solution._graph_outputs.clear()
        solution._simulated_timestamp += 33333  # as process() does: 30 fps timestamps
        packet = solution._make_packet(self._input_type, rgb).at(solution._simulated_timestamp)
        solution._graph.add_packet_to_input_stream(stream=self._stream, packet=packet)
        solution._graph.wait_until_idle()
        found = solution._graph_outputs.get(self._output)
        return None if found is None else solution._get_packet_content(self._output_type, found)
