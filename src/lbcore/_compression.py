"""What the core says when the transport's compression hook fails (section 11.3).

The core never sees a prompt: it asks for a shrink (``CompressPrompt``) and
hears back one number, the shrunk prompt's re-estimate, or the hook's error
text. These are the words the reference uses for that error.
"""

from __future__ import annotations

from typing import Final

from ._failure import Failure, FailureKind
from ._text import clean_text

__all__ = ("COMPRESSION_FAILED_CODE", "compression_failed_message", "compression_failure")

#: ``Failure.code`` of a backend whose compression hook failed.
COMPRESSION_FAILED_CODE: Final = "compression_failed"


def compression_failed_message(profile_name: str, backend: str, cause: str) -> str:
    return clean_text(
        f'Load balancer profile "{profile_name}" sub-profile "{backend}" '
        f"compression callback failed: {cause}",
        512,
    )


def compression_failure(profile_name: str, backend: str, cause: str) -> Failure:
    """The failure stored for the aggregate: a context-limit rejection by another route."""
    return Failure(
        kind=FailureKind.CONTEXT_LIMIT,
        message=compression_failed_message(profile_name, backend, cause),
        code=COMPRESSION_FAILED_CODE,
    )
