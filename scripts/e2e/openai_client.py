"""The official openai client against deeprust: chat and completions, streaming and not,
n > 1, logprobs, seeds, and errors as the client's own exception types."""
import os
import socket
import subprocess
import sys
import tempfile
import time

import openai
from openai import OpenAI

GOOD, LIMITED = "sk-e2e-good", "sk-e2e-limited"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(binary):
    port = free_port()
    keys = tempfile.NamedTemporaryFile("w", suffix=".keys", delete=False)
    keys.write(f"{GOOD}\n{LIMITED} rpm=1\n")
    keys.close()
    server = subprocess.Popen([binary, "serve", "--port", str(port), "--api-keys-file", keys.name, "--kv-cache-gb", "0.25"],
                              stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}/v1"
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        run(base)
    finally:
        server.terminate()
        server.wait(timeout=30)
        os.unlink(keys.name)
    print("openai e2e: all checks passed")


def run(base):
    client = OpenAI(base_url=base, api_key=GOOD, max_retries=0)
    model = client.models.list().data[0].id
    assert client.models.retrieve(model).id == model

    msgs = [{"role": "user", "content": "Tell me a story about a cat."}]
    r = client.chat.completions.create(model=model, messages=msgs, max_tokens=40, temperature=0.8, seed=11)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    text = r.choices[0].message.content
    assert text and r.usage.completion_tokens == 40 and r.choices[0].finish_reason == "length", r
    assert r.system_fingerprint
    again = client.chat.completions.create(model=model, messages=msgs, max_tokens=40, temperature=0.8, seed=11)
    assert again.choices[0].message.content == text, "the same seed gives the same answer"

    # streaming, with usage at the end
    chunks = list(client.chat.completions.create(model=model, messages=msgs, max_tokens=40, temperature=0.8, seed=11,
                                                 stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text, (streamed, text)
    assert chunks[-1].usage.completion_tokens == 40

    # n > 1 and logprobs
    r = client.chat.completions.create(model=model, messages=msgs, max_tokens=12, n=3, seed=5, logprobs=True, top_logprobs=2)
    assert len(r.choices) == 3
    lp = r.choices[0].logprobs.content
    assert len(lp) == 12 and len(lp[0].top_logprobs) == 2 and lp[0].logprob <= 0

    # text completions, streaming and not
    c = client.completions.create(model=model, prompt="Once upon a time", max_tokens=20, temperature=0)
    assert c.object == "text_completion" and len(c.choices[0].text) > 10
    s = "".join(x.choices[0].text for x in client.completions.create(model=model, prompt="Once upon a time", max_tokens=20,
                                                                       temperature=0, stream=True) if x.choices)
    assert s == c.choices[0].text

    # errors arrive as the client's own exception types
    def raises(exc, f):
        try:
            f()
        except exc as e:
            return e
        raise AssertionError(f"expected {exc.__name__}")

    raises(openai.AuthenticationError, lambda: OpenAI(base_url=base, api_key="sk-wrong", max_retries=0).models.list())
    raises(openai.NotFoundError, lambda: client.chat.completions.create(model="gpt-nope", messages=msgs))
    e = raises(openai.BadRequestError, lambda: client.chat.completions.create(model=model, messages=msgs, top_p=5))
    assert e.body["param"] == "top_p", e.body
    e = raises(openai.BadRequestError, lambda: client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "word " * 3000}]))
    assert e.body["code"] == "context_length_exceeded", e.body
    limited = OpenAI(base_url=base, api_key=LIMITED, max_retries=0)
    limited.models.list()
    raises(openai.RateLimitError, lambda: limited.models.list())


if __name__ == "__main__":
    main(sys.argv[1])
