from gateway.wire.sse import SSEParser, encode_event


def test_events_split_across_chunks_are_joined() -> None:
    parser = SSEParser()
    assert parser.feed(b'data: {"a"') == []
    assert parser.feed(b': 1}\n\ndata: [DONE]\n\n') == [b'{"a": 1}', b"[DONE]"]


def test_crlf_comments_and_multiline_data() -> None:
    parser = SSEParser()
    events = parser.feed(b": keepalive\r\n\r\nevent: x\r\ndata: one\r\ndata: two\r\n\r\n")
    assert events == [b"one\ntwo"]


def test_flush_returns_an_unterminated_last_event() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: tail") == []
    assert parser.flush() == [b"tail"]
    assert parser.flush() == []


def test_encode_is_one_data_line_and_a_blank_line() -> None:
    assert encode_event({"x": 1}) == b'data: {"x":1}\n\n'
