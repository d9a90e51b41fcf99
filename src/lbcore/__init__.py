"""lbcore: a deterministic, sans-IO load balancer for LLM backends.

The core decides; it never acts. Feed it events (a request started, a chunk
arrived, an attempt failed, the clock moved) and it answers with actions (start
an attempt on this backend, fail over, trip a breaker, the request is done).
It does no I/O, reads no clock, starts no thread, logs nothing and draws no
random numbers: the same configuration and the same events always give the
same actions, which is what makes its traces replayable.
"""

from ._errors import ConfigError, InvalidEvent, LBError
from ._failure import Failure, FailureKind
from ._text import clean_text, truncate

__version__ = "0.1.0"

__all__ = (
    "ConfigError",
    "Failure",
    "FailureKind",
    "InvalidEvent",
    "LBError",
    "__version__",
    "clean_text",
    "truncate",
)
