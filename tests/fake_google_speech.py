"""A local stand-in for Google Cloud Speech v1 that speaks the real gRPC protocol.

It serves `google.cloud.speech.v1.Speech/Recognize`, `/LongRunningRecognize` and
`google.longrunning.Operations/GetOperation` with the real protobuf messages, validates what
it receives (FLAC audio whose sample rate matches the config), and answers with a scripted
transcript, or with the status codes a test queues (UNAVAILABLE, UNAUTHENTICATED, ...).
"""

from __future__ import annotations

import io
import threading
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import soundfile as sf
from google.cloud.speech_v1 import types as speech
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, duration_pb2


@dataclass
class FakeSpeech:
    transcript: str = "hello from the fake service"
    language_code: str = "en-us"
    errors: list[tuple[grpc.StatusCode, str]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    received: list[dict] = field(default_factory=list)
    operations: dict[str, bytes] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _fail_if_queued(self, context: grpc.ServicerContext) -> bool:
        with self.lock:
            if self.errors:
                code, message = self.errors.pop(0)
                context.abort(code, message)
        return False

    def _response(self, request: speech.RecognizeRequest) -> speech.RecognizeResponse:
        samples, sr = sf.read(io.BytesIO(request.audio.content))
        if request.config.encoding != speech.RecognitionConfig.AudioEncoding.FLAC or \
                sr != request.config.sample_rate_hertz:
            raise ValueError("audio does not match its RecognitionConfig")
        self.received.append({"seconds": len(samples) / sr, "rate": sr, "language": request.config.language_code,
                              "words": request.config.enable_word_time_offsets})
        words = [speech.WordInfo(word=w, start_time=duration_pb2.Duration(nanos=int(i * 4e8)),
                                 end_time=duration_pb2.Duration(nanos=int((i + 1) * 4e8)), confidence=0.9)
                 for i, w in enumerate(self.transcript.split())]
        alt = speech.SpeechRecognitionAlternative(transcript=self.transcript, confidence=0.93, words=words)
        return speech.RecognizeResponse(results=[speech.SpeechRecognitionResult(
            alternatives=[alt], language_code=self.language_code)])

    def recognize(self, request, context):
        self.calls.append("Recognize")
        self._fail_if_queued(context)
        try:
            return self._response(request)
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    def long_running_recognize(self, request, context):
        self.calls.append("LongRunningRecognize")
        self._fail_if_queued(context)
        result = self._response(speech.RecognizeRequest(config=request.config, audio=request.audio))
        name = f"operations/{len(self.operations) + 1}"
        packed = any_pb2.Any()
        packed.Pack(speech.LongRunningRecognizeResponse.pb(speech.LongRunningRecognizeResponse(
            results=result.results)))
        self.operations[name] = packed.SerializeToString()
        return operations_pb2.Operation(name=name, done=False)

    def get_operation(self, request, context):
        self.calls.append("GetOperation")
        packed = any_pb2.Any.FromString(self.operations[request.name])
        return operations_pb2.Operation(name=request.name, done=True, response=packed)


def serve(fake: FakeSpeech) -> tuple[grpc.Server, str]:
    """Start the fake on a free loopback port; return (server, 'host:port')."""
    def unary(fn, req, resp):
        return grpc.unary_unary_rpc_method_handler(fn, request_deserializer=req, response_serializer=resp)

    speech_handler = grpc.method_handlers_generic_handler("google.cloud.speech.v1.Speech", {
        "Recognize": unary(fake.recognize, speech.RecognizeRequest.deserialize, speech.RecognizeResponse.serialize),
        "LongRunningRecognize": unary(fake.long_running_recognize, speech.LongRunningRecognizeRequest.deserialize,
                                      operations_pb2.Operation.SerializeToString),
    })
    ops_handler = grpc.method_handlers_generic_handler("google.longrunning.Operations", {
        "GetOperation": unary(fake.get_operation, operations_pb2.GetOperationRequest.FromString,
                              operations_pb2.Operation.SerializeToString),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((speech_handler, ops_handler))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def stop(server: grpc.Server, address: str) -> None:
    """Close the engine's cached client channels (the one to `address` among them), then stop the server. A
    server stopped under an open channel sends it a GOAWAY, which gRPC's core logs to stderr ("Got goaway")
    outside pytest's capture."""
    from kebr_data.asr_engines.google_speech import _client

    _client.cache_clear()
    server.stop(grace=None)
