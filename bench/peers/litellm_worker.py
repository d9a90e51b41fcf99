"""LiteLLM's Router, driven over stdin/stdout by ``bench/peers_litellm.py``.

Runs under ``.peers-venv`` (``make bench-peers``), never under the project's
venv: LiteLLM is no dependency of lbcore. One JSON object per line in, one per
line out, on one asyncio loop kept for the whole session (the Router keeps its
HTTP clients per loop). Reads ``{"urls": {...}}`` first, then commands:

* ``{"op": "stream", "model": M, "count": N}``: N streamed requests one at a
  time; answers ``{"ns": [...]}`` (each request's wall time);
* ``{"op": "pick", "count": N}``: N routing picks; answers ``{"ns_per_pick": x}``;
* ``{"op": "load", "tasks": T, "requests": R}``: R streamed requests over T
  tasks; answers ``{"per_second": x, "errors": n}``;
* ``{"op": "quit"}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from importlib.metadata import version
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch at import
# Answers go to the original stdout; anything LiteLLM prints goes to stderr.
ANSWERS = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)

from litellm import Router  # noqa: E402

KEY = "sk-bench-not-a-real-key"
MESSAGES = [{"role": "user", "content": "Say something short."}]


def deployment(model: str, url: str) -> dict[str, Any]:
    return {
        "model_name": model,
        "litellm_params": {"model": "openai/bench-model", "api_base": url, "api_key": KEY},
    }


def make_router(urls: dict[str, str]) -> Router:
    # The same three streaming backends the lbcore side balances over, and for
    # the failover a backend that answers 503 with a fallback to them.
    return Router(
        model_list=[
            *(deployment("bench", urls[name]) for name in ("a", "b", "c")),
            deployment("bad", urls["unavailable"]),
        ],
        fallbacks=[{"bad": ["bench"]}],
        num_retries=0,
    )


async def stream_once(router: Router, model: str) -> int:
    response = await router.acompletion(model=model, messages=MESSAGES, stream=True)
    count = 0
    async for chunk in response:
        count += bool(chunk.choices and chunk.choices[0].delta.content)
    return count


async def answer(router: Router, command: dict[str, Any]) -> dict[str, Any]:
    op = command["op"]
    if op == "stream":
        samples = []
        for _ in range(command["count"]):
            began = time.perf_counter_ns()
            await stream_once(router, command["model"])
            samples.append(time.perf_counter_ns() - began)
        return {"ns": samples}
    if op == "pick":
        began = time.perf_counter_ns()
        for _ in range(command["count"]):
            await router.async_get_available_deployment(
                model="bench", messages=MESSAGES, request_kwargs={}
            )
        return {"ns_per_pick": (time.perf_counter_ns() - began) / command["count"]}
    if op == "load":
        tasks, each = command["tasks"], max(1, command["requests"] // command["tasks"])
        errors = 0

        async def worker() -> None:
            nonlocal errors
            for _ in range(each):
                try:
                    await stream_once(router, "bench")
                except Exception:
                    errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(tasks)))
        return {"per_second": each * tasks / (time.perf_counter() - began), "errors": errors}
    raise ValueError(f"unknown op {op!r}")


async def main() -> None:
    loop = asyncio.get_running_loop()

    async def read() -> dict[str, Any]:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return {"op": "quit"}
        return dict(json.loads(line))

    def write(message: dict[str, Any]) -> None:
        ANSWERS.write(json.dumps(message) + "\n")
        ANSWERS.flush()

    router = make_router((await read())["urls"])
    write({"ready": True, "litellm": version("litellm")})
    while (command := await read())["op"] != "quit":
        write(await answer(router, command))


if __name__ == "__main__":
    asyncio.run(main())
