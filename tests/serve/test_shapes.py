"""The wire form of answers and chunks (router/serve/shapes.py), without a server."""

from __future__ import annotations

import json

from router.response import Route, chunk_of, response_of
from router.serve.shapes import answer_body, chunk_event

ANSWER = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
          "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "héllo"}}]}
CHUNK = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": {"content": "hé"}, "finish_reason": None}]}


def test_an_answer_is_its_openai_fields_then_the_route_in_one_compact_json_object() -> None:
    answer = response_of(ANSWER)
    answer.route = Route(chain="default", served_by="p")
    body = answer_body(answer)
    assert b" " not in body.replace(b"h\xc3\xa9llo", b"") and "héllo".encode() in body  # compact, UTF-8 as is
    fields = answer.model_dump(mode="json", exclude_unset=True)
    assert json.loads(body) == {**fields, "router": json.loads(json.dumps(vars(answer.route)))}
    assert list(json.loads(body))[-1] == "router" and fields["choices"][0]["message"]["content"] == "héllo"


def test_an_upstream_gateways_router_field_is_replaced_by_ours_not_sent_twice() -> None:
    answer = response_of({**ANSWER, "router": {"served_by": "far-away"}})
    answer.route = Route(chain="default", served_by="near")
    body = answer_body(answer)
    assert body.count(b'"router"') == 1 and json.loads(body)["router"]["served_by"] == "near"


def test_a_chunk_is_one_data_event_and_a_restart_marker_says_so() -> None:
    event = chunk_event(chunk_of(CHUNK))
    assert event.startswith(b"data: ") and event.endswith(b"\n\n") and event.count(b"\n") == 2
    assert json.loads(event[len(b"data: "):]) == CHUNK
    marker = chunk_of({**CHUNK, "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": None}]})
    marker.restart = True
    assert json.loads(chunk_event(marker)[len(b"data: "):])["router"] == {"restart": True}
