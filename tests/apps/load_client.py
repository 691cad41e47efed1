"""Load client for the load tests: ``python load_client.py URL COUNT CONCURRENCY [STOP_AFTER]``.

Sends COUNT requests (even ``n`` to ``/async/{n}``, odd to ``/sync/{n}``), at most CONCURRENCY at once, each with
``X-Request-ID: load-{n}``, and prints one JSON object: the ``n`` of every answered request (status 200 and the right
body) and of every failed one. With STOP_AFTER, the client prints ``READY`` on stderr once STOP_AFTER requests were
answered (a test sends SIGTERM to the server then) and goes on until every request is answered or failed.
"""

import asyncio
import json
import sys

import httpx


async def main(url: str, count: int, concurrency: int, stop_after: int) -> None:
    answered: list[int] = []
    failed: list[int] = []
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def one(n: int) -> None:
            async with gate:
                path = f"/async/{n}" if n % 2 == 0 else f"/sync/{n}"
                try:
                    reply = await client.post(path, json={"item": f"item-{n}"}, headers={"X-Request-ID": f"load-{n}"})
                    ok = reply.status_code == 200 and reply.json().get("n") == n
                except httpx.HTTPError as exc:
                    print(f"request {n}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                    ok = False
                (answered if ok else failed).append(n)
                if stop_after and len(answered) == stop_after:
                    print("READY", file=sys.stderr, flush=True)

        await asyncio.gather(*(one(n) for n in range(count)))
    print(json.dumps({"answered": sorted(answered), "failed": sorted(failed)}))


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[2:]]
    asyncio.run(main(sys.argv[1], args[0], args[1], args[2] if len(args) > 2 else 0))
