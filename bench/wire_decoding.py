"""What reading a streamed answer costs in the wire layer, against a bare baseline.

Run with ``make bench``. For each provider a 20-chunk answer (text deltas,
finish, usage, terminator), shaped as the provider documents it, is decoded
whole and in 64-byte network-sized pieces. The baseline, measured side by
side in the same run, is the least any client must do: split the body into
lines and ``json.loads`` every ``data:`` line. The ratio is our decoder's time
over the baseline's; medians over several runs.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable

from lbtransports.wire import stream_decoder

CHUNKS = 20
RUNS = 9
REPEAT = 300
PIECE = 64
WORD = "lorem "


def event(data: object, name: str | None = None) -> str:
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {json.dumps(data)}\n\n"


def openai_stream() -> bytes:
    out = [event({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})]
    out += [
        event({"choices": [{"index": 0, "delta": {"content": WORD}, "finish_reason": None}]})
        for _ in range(CHUNKS)
    ]
    out.append(event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    out.append(event({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 20}}))
    out.append("data: [DONE]\n\n")
    return "".join(out).encode()


def anthropic_stream() -> bytes:
    start = {"type": "message_start", "message": {"usage": {"input_tokens": 9, "output_tokens": 1}}}
    out = [event(start, "message_start")]
    block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}}
    out.append(event(block, "content_block_start"))
    delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta"}}
    for _ in range(CHUNKS):
        delta["delta"] = {"type": "text_delta", "text": WORD}
        out.append(event(delta, "content_block_delta"))
    out.append(event({"type": "content_block_stop", "index": 0}, "content_block_stop"))
    end = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn"},
        "usage": {"output_tokens": 20},
    }
    out.append(event(end, "message_delta"))
    out.append(event({"type": "message_stop"}, "message_stop"))
    return "".join(out).encode()


def gemini_stream() -> bytes:
    out = []
    for n in range(CHUNKS):
        candidate: dict[str, object] = {"content": {"role": "model", "parts": [{"text": WORD}]}}
        body: dict[str, object] = {"candidates": [candidate]}
        if n == CHUNKS - 1:
            candidate["finishReason"] = "STOP"
            body["usageMetadata"] = {"promptTokenCount": 9, "candidatesTokenCount": 20}
        out.append(event(body))
    return "".join(out).encode()


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def ours(provider: str, pieces: list[bytes]) -> Callable[[], int]:
    def run() -> int:
        decoder = stream_decoder(provider)
        count = 0
        for piece in pieces:
            count += len(decoder.feed(piece))
        return count + len(decoder.end())

    return run


def baseline(pieces: list[bytes]) -> Callable[[], int]:
    def run() -> int:
        body = b"".join(pieces)
        count = 0
        for line in body.split(b"\n"):
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                json.loads(line[6:])
                count += 1
        return count

    return run


def median_us(job: Callable[[], int]) -> float:
    samples = []
    for _ in range(RUNS):
        began = time.perf_counter_ns()
        for _ in range(REPEAT):
            job()
        samples.append((time.perf_counter_ns() - began) / REPEAT / 1000)
    return statistics.median(samples)


def main() -> None:
    streams = {
        "openai": openai_stream(),
        "anthropic": anthropic_stream(),
        "gemini": gemini_stream(),
    }
    print(f"{CHUNKS}-chunk answers; median of {RUNS} runs x {REPEAT} decodes")
    print(f"{'provider':<10} {'pieces':>7} {'ours us':>8} {'baseline us':>12} {'ratio':>6}")
    for provider, data in streams.items():
        for label, pieces in (("whole", [data]), (f"{PIECE} B", split(data, PIECE))):
            mine = median_us(ours(provider, pieces))
            base = median_us(baseline(pieces))
            print(f"{provider:<10} {label:>7} {mine:>8.1f} {base:>12.1f} {mine / base:>6.2f}")


if __name__ == "__main__":
    main()
