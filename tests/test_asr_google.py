"""The Google engine against a local server speaking Speech v1's real gRPC protocol: the happy
path (sync and long-running), a transient error retried, quota errors as failed rows, rejected
credentials as an environment failure that stops the shard (a rerun must redo those clips)."""

import grpc
import numpy as np
import pyarrow as pa
import pytest
from fake_google_speech import FakeSpeech, serve, stop

from kebr_data import config
from kebr_data.errors import EnvironmentFailure
from kebr_data.media.flac import encode_flac
from kebr_data.schema import AUDIO, PLAN
from kebr_data.stages.asr import AsrStage
from kebr_data.stages.base import ShardContext


@pytest.fixture()
def fake():
    service = FakeSpeech()
    server, address = serve(service)
    service.address = address
    yield service
    stop(server, address)


def tone(seconds, sr=22050):
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype(np.int16)


def run(tmp_path, fake, seconds=(2.0,), **overrides):
    sets = ["asr.engine='google'", f"asr.google_endpoint='{fake.address}'", "asr.google_retry_initial_s=0.05",
            "asr.google_retry_deadline_s=10"] + [f"asr.{k}={v}" for k, v in overrides.items()]
    stage = AsrStage(config.load(overrides=sets)["asr"])
    assert stage.check() == []
    plan = [{"clip_id": f"c{i}", "status": "ok", "source": "folder"} for i in range(len(seconds))]
    audio = [{"clip_id": f"c{i}", "status": "ok", "sample_rate": 22050, "num_samples": int(s * 22050),
              "duration_s": s, "flac": encode_flac(tone(s), 22050)} for i, s in enumerate(seconds)]
    ctx = ShardContext(0, {"plan": pa.Table.from_pylist(plan, schema=PLAN),
                           "audio": pa.Table.from_pylist(audio, schema=AUDIO)}, tmp_path)
    return stage.run_shard(ctx).to_pylist()


def test_happy_path_sync_recognize(tmp_path, fake):
    (row,) = run(tmp_path, fake)
    assert (row["status"], row["engine"], row["text"], row["language"]) == \
        ("ok", "google", "hello from the fake service", "en")
    assert row["language_prob"] == pytest.approx(0.93) and row["avg_logprob"] is None
    assert [w["word"] for w in row["words"]] == ["hello", "from", "the", "fake", "service"]
    assert row["words"][1]["start"] == pytest.approx(0.4) and row["words"][1]["end"] == pytest.approx(0.8)
    assert fake.calls == ["Recognize"]
    assert fake.received == [{"seconds": 2.0, "rate": 22050, "language": "en-US", "words": True}]


def test_long_clip_goes_through_long_running_recognize(tmp_path, fake):
    (row,) = run(tmp_path, fake, seconds=(61.0,))
    assert row["status"] == "ok" and row["text"] == "hello from the fake service"
    assert fake.calls[0] == "LongRunningRecognize" and "GetOperation" in fake.calls


def test_transient_error_is_retried(tmp_path, fake):
    fake.errors = [(grpc.StatusCode.UNAVAILABLE, "try again"), (grpc.StatusCode.UNAVAILABLE, "try again")]
    (row,) = run(tmp_path, fake)
    assert row["status"] == "ok" and fake.calls == ["Recognize"] * 3


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED])
def test_rejected_credentials_stop_the_shard(tmp_path, fake, code):
    fake.errors = [(code, "the service said no")]
    with pytest.raises(EnvironmentFailure) as exc:
        run(tmp_path, fake, seconds=(2.0, 2.0))
    assert "GOOGLE_APPLICATION_CREDENTIALS" in str(exc.value) and exc.value.exit_code == 3


@pytest.mark.parametrize("code,error,hint", [
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "quota", "raise the project's quota"),
])
def test_quota_errors_are_failed_rows(tmp_path, fake, code, error, hint):
    fake.errors = [(code, "the service said no")]
    rows = run(tmp_path, fake, seconds=(2.0, 2.0))
    assert (rows[0]["status"], rows[0]["error"]) == ("failed", error)
    assert hint in rows[0]["message"] and "the service said no" in rows[0]["message"]
    assert rows[1]["status"] == "ok"  # the next clip goes on
    assert fake.calls == ["Recognize", "Recognize"]  # not retried


def test_credentials_are_never_logged(tmp_path, fake, monkeypatch):
    key = tmp_path / "key.json"
    secret = "-----BEGIN PRIVATE KEY-----SECRETSECRET"
    key.write_text('{"type": "service_account", "private_key": "%s"}' % secret)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    fake.errors = [(grpc.StatusCode.UNAUTHENTICATED, "bad key")]
    with pytest.raises(EnvironmentFailure) as exc:
        run(tmp_path, fake)
    assert secret not in str(exc.value) and str(key) not in str(exc.value)


def test_missing_credentials_is_a_prerequisite(monkeypatch):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    stage = AsrStage(config.load(overrides=["asr.engine='google'"])["asr"])
    (problem,) = stage.check()
    assert "GOOGLE_APPLICATION_CREDENTIALS" in problem


def test_a_client_dropped_from_the_cache_has_its_channel_closed(tmp_path, fake):
    """The engine keeps the clients of the two endpoints used last: a third drops the first, whose gRPC
    channel is closed then (an RPC on it is refused by gRPC), not left open until the process ends."""
    from google.cloud.speech_v1 import types as speech

    from kebr_data.asr_engines.google_speech import _client

    others = [FakeSpeech(), FakeSpeech()]
    servers = [serve(other) for other in others]
    try:
        for other, (_, address) in zip(others, servers):
            other.address = address
        assert run(tmp_path, fake)[0]["status"] == "ok"
        dropped = _client(fake.address)
        for other in others:
            assert run(tmp_path, other)[0]["status"] == "ok"
        with pytest.raises(ValueError, match="closed channel"):
            dropped.recognize(config=speech.RecognitionConfig(language_code="en-US"),
                              audio=speech.RecognitionAudio(content=b""))
        assert fake.calls == ["Recognize"] and [o.calls for o in others] == [["Recognize"], ["Recognize"]]
        assert run(tmp_path, others[0])[0]["status"] == "ok"  # the clients kept still work
    finally:
        for server, address in servers:
            stop(server, address)
