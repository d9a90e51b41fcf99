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
import time
from collections.abc import Callable

from _harness import Section, Table, publish, quick, ratio, rounds, spread

from lbtransports.wire import stream_decoder

CHUNKS = 20
RUNS = 3 if quick() else 9
REPEAT = 10 if quick() else 300
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


def per_decode_us(job: Callable[[], int]) -> Callable[[], float]:
    def measure() -> float:
        began = time.perf_counter_ns()
        for _ in range(REPEAT):
            job()
        return (time.perf_counter_ns() - began) / REPEAT / 1000

    return measure


def main() -> None:
    began = time.monotonic()
    streams = {
        "openai": openai_stream(),
        "anthropic": anthropic_stream(),
        "gemini": gemini_stream(),
    }
    section = Section(
        key="wire",
        order=15,
        title="1c. Decoding a streamed answer (the wire layer alone)",
        method=(
            f"`bench/wire_decoding.py`: a {CHUNKS}-chunk answer in each provider's documented "
            f"shape, decoded whole and in {PIECE}-byte pieces by `stream_decoder`, against a "
            "baseline that splits lines and `json.loads` every `data:` line; "
            f"{REPEAT} decodes per round, median (min-max) over {RUNS} interleaved rounds."
        ),
    )
    table = Table(
        "µs per decoded answer", ["provider", "pieces", "ours", "json.loads baseline", "ratio"]
    )
    for provider, data in streams.items():
        for label, pieces in (("whole", [data]), (f"{PIECE} B", split(data, PIECE))):
            results = rounds(
                {
                    "ours": per_decode_us(ours(provider, pieces)),
                    "base": per_decode_us(baseline(pieces)),
                },
                RUNS,
            )
            share = ratio(results["ours"], results["base"])
            table.rows.append(
                [
                    provider,
                    label,
                    spread(results["ours"]).show(1),
                    spread(results["base"]).show(1),
                    share.show(2, "x"),
                ]
            )
            section.figure(f"wire.ratio.{provider}.{label}", share)
    section.tables.append(table)
    publish(section, began)


if __name__ == "__main__":
    main()
