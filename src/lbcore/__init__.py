"""lbcore: a deterministic, sans-IO load balancer for LLM backends.

The core decides; it never acts. Feed it events (a request started, a chunk
arrived, an attempt failed, the clock moved) and it answers with actions (start
an attempt on this backend, fail over, trip a breaker, the request is done).
It does no I/O, reads no clock, starts no thread, logs nothing and draws no
random numbers: the same configuration and the same events always give the
same actions, which is what makes its traces replayable.
"""

from ._actions import (
    Action,
    CancelAttempt,
    CancelReason,
    CloseBreaker,
    CoolDown,
    FailOver,
    FailoverReason,
    FirstChunkDue,
    HalfOpenBreaker,
    RequestAborted,
    RequestCompleted,
    RequestDequeued,
    RequestFailed,
    RequestQueued,
    RetryScheduled,
    SelectionChanged,
    SkipBackend,
    SkipReason,
    StartAttempt,
    TripBreaker,
)
from ._balancer import Balancer, UnsupportedServerTool
from ._breaker import BreakerFailure, BreakerSnapshot, BreakerState
from ._config import BackendSpec, Backoff, BalancerConfig, Settings, Strategy
from ._errors import ConfigError, InvalidEvent, LBError
from ._events import (
    AttemptFailed,
    AttemptHeld,
    AttemptSent,
    AttemptSucceeded,
    AttemptTimedOut,
    ChunkReceived,
    Event,
    RequestCancelled,
    RequestStarted,
    SlotTimedOut,
    StatsReset,
    Tick,
    TimeoutPhase,
)
from ._explain import explain
from ._failure import Failure, FailureKind
from ._metrics import BackendMetrics, ModelInfo, Stats
from ._outcomes import (
    AllBackendsUnhealthy,
    AllContextLimitsExceeded,
    BackendFailed,
    BackendFailure,
    BudgetExhausted,
    Category,
    ContextLimitExceeded,
    DeadlineExceeded,
    FailoverExhausted,
    LocalSaturation,
    QueueFull,
    QueueTimedOut,
    RequestError,
    RetryBudgetExhausted,
)
from ._replay import Mismatch, replay, run, verify_trace
from ._story import request_ids, tell
from ._text import clean_text, truncate
from ._trace import (
    TRACE_FORMAT,
    Step,
    TraceError,
    TraceHeader,
    decode_trace,
    encode_line,
    encode_trace,
)

__version__ = "0.1.0"

__all__ = (
    "TRACE_FORMAT",
    "Action",
    "AllBackendsUnhealthy",
    "AllContextLimitsExceeded",
    "AttemptFailed",
    "AttemptHeld",
    "AttemptSent",
    "AttemptSucceeded",
    "AttemptTimedOut",
    "BackendFailed",
    "BackendFailure",
    "BackendMetrics",
    "BackendSpec",
    "Backoff",
    "Balancer",
    "BalancerConfig",
    "BreakerFailure",
    "BreakerSnapshot",
    "BreakerState",
    "BudgetExhausted",
    "CancelAttempt",
    "CancelReason",
    "Category",
    "ChunkReceived",
    "CloseBreaker",
    "ConfigError",
    "ContextLimitExceeded",
    "CoolDown",
    "DeadlineExceeded",
    "Event",
    "FailOver",
    "FailoverExhausted",
    "FailoverReason",
    "Failure",
    "FailureKind",
    "FirstChunkDue",
    "HalfOpenBreaker",
    "InvalidEvent",
    "LBError",
    "LocalSaturation",
    "Mismatch",
    "ModelInfo",
    "QueueFull",
    "QueueTimedOut",
    "RequestAborted",
    "RequestCancelled",
    "RequestCompleted",
    "RequestDequeued",
    "RequestError",
    "RequestFailed",
    "RequestQueued",
    "RequestStarted",
    "RetryBudgetExhausted",
    "RetryScheduled",
    "SelectionChanged",
    "Settings",
    "SkipBackend",
    "SkipReason",
    "SlotTimedOut",
    "StartAttempt",
    "Stats",
    "StatsReset",
    "Step",
    "Strategy",
    "Tick",
    "TimeoutPhase",
    "TraceError",
    "TraceHeader",
    "TripBreaker",
    "UnsupportedServerTool",
    "__version__",
    "clean_text",
    "decode_trace",
    "encode_line",
    "encode_trace",
    "explain",
    "replay",
    "request_ids",
    "run",
    "tell",
    "truncate",
    "verify_trace",
)
