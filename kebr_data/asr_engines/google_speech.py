"""Google Cloud Speech-to-Text (v1), the ASR engine of the KEBR and SKESL papers.

Synchronous `Recognize` for clips up to the service's one-minute limit, `LongRunningRecognize`
(polled to completion) above it. Credentials come from the usual place (GOOGLE_APPLICATION_CREDENTIALS
or the other google-auth defaults) and are never read or logged by the toolkit. Transient errors
(UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL) are retried with exponential backoff; quota and
authentication errors become failed rows with a message saying what to do.
`asr.google_endpoint` points the client at an emulator or test server (insecure channel).
"""

from __future__ import annotations

import collections
import os
import threading
from dataclasses import dataclass
from typing import Any

from ..deps import require
from ..errors import ClipError, PrerequisiteError
from ..settings import setting
from .base import AsrEngine, ClipAudio, Transcript, Word

SYNC_LIMIT_S = 60.0  # the service rejects longer audio in synchronous Recognize


@dataclass
class GoogleSettings:
    """The google engine's options (credentials come from GOOGLE_APPLICATION_CREDENTIALS, never from here)."""

    google_language_code: str = setting("en-US", "google engine: the language asked for (the papers' setting)")
    google_model: str = setting("", "google engine: e.g. 'video' or 'latest_long'; '' = the service default")
    google_endpoint: str = setting("", "google engine: '' = Google's service; host:port of an emulator (insecure)",
                                   runtime=True)
    google_retry_initial_s: float = setting(0.5, "google engine: first backoff on UNAVAILABLE/DEADLINE_EXCEEDED/"
                                                 "INTERNAL", min=0.0, runtime=True)
    google_retry_deadline_s: float = setting(120.0, "google engine: give up retrying after this long", min=0.0,
                                             runtime=True)


class _Clients:
    """The Speech clients of this process by endpoint, the `size` most recently used kept (a worker talks to
    one, a test to a few); the one dropped has its gRPC channel closed, not left open until the process ends
    (an open channel holds its connection, and a server stopped under it is answered with a GOAWAY)."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._clients: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, endpoint: str) -> Any:
        """The client of `endpoint` ('' = Google's service), made on first use."""
        with self._lock:
            if endpoint not in self._clients:
                self._clients[endpoint] = _new_client(endpoint)
            self._clients.move_to_end(endpoint)
            while len(self._clients) > self.size:
                self._clients.popitem(last=False)[1].transport.close()
            return self._clients[endpoint]

    def cache_clear(self) -> None:
        """Close every client's channel and forget them."""
        with self._lock:
            while self._clients:
                self._clients.popitem()[1].transport.close()


def _new_client(endpoint: str) -> Any:
    speech = require("google.cloud.speech_v1", "google", "the Google Cloud Speech engine")
    if not endpoint:
        return speech.SpeechClient()
    import grpc
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.speech_v1.services.speech.transports import SpeechGrpcTransport

    transport = SpeechGrpcTransport(channel=grpc.insecure_channel(endpoint), credentials=AnonymousCredentials())
    return speech.SpeechClient(transport=transport)


_client = _Clients()


def _retry(settings: GoogleSettings) -> Any:
    from google.api_core import exceptions, retry

    return retry.Retry(initial=settings.google_retry_initial_s, maximum=30.0, multiplier=2.0,
                       timeout=settings.google_retry_deadline_s,
                       predicate=retry.if_exception_type(exceptions.ServiceUnavailable, exceptions.DeadlineExceeded,
                                                         exceptions.InternalServerError))


def _seconds(duration: Any) -> float:
    return duration.total_seconds() if hasattr(duration, "total_seconds") else float(duration)


def transcribe_google(flac: bytes, sample_rate: int, duration_s: float, settings: GoogleSettings) -> Transcript:
    """One clip's FLAC bytes through Google Cloud Speech."""
    from google.api_core import exceptions

    speech = require("google.cloud.speech_v1", "google", "the Google Cloud Speech engine")
    client = _client(settings.google_endpoint)
    config = speech.RecognitionConfig(encoding=speech.RecognitionConfig.AudioEncoding.FLAC,
                                      sample_rate_hertz=sample_rate, audio_channel_count=1,
                                      language_code=settings.google_language_code, enable_word_time_offsets=True,
                                      enable_word_confidence=True, model=settings.google_model or None)
    audio = speech.RecognitionAudio(content=flac)
    timeout = settings.google_retry_deadline_s
    try:
        if duration_s <= SYNC_LIMIT_S:
            response = client.recognize(config=config, audio=audio, retry=_retry(settings), timeout=timeout)
        else:
            operation = client.long_running_recognize(config=config, audio=audio, retry=_retry(settings),
                                                      timeout=timeout)
            response = operation.result(timeout=max(timeout, 10 * duration_s))
    except exceptions.Unauthenticated as exc:
        raise ClipError("auth", f"Google Cloud Speech rejected the credentials ({exc.message}); check "
                                "GOOGLE_APPLICATION_CREDENTIALS and the key's permissions") from None
    except exceptions.PermissionDenied as exc:
        raise ClipError("auth", f"Google Cloud Speech denied access ({exc.message}); enable the Speech-to-Text API "
                                "for the project and grant the service account access") from None
    except exceptions.ResourceExhausted as exc:
        raise ClipError("quota", f"Google Cloud Speech quota exhausted ({exc.message}); lower --workers, or raise "
                                 "the project's quota in the Google Cloud console") from None
    except exceptions.RetryError as exc:
        raise ClipError("unavailable", f"Google Cloud Speech kept failing for {timeout:g} s: {exc.cause}") from None
    except exceptions.GoogleAPICallError as exc:
        raise ClipError("google_error", f"Google Cloud Speech: {exc.code}: {exc.message}") from None
    texts, words, confidences, language = [], [], [], None
    for result in response.results:
        if not result.alternatives:
            continue
        best = result.alternatives[0]
        texts.append(best.transcript.strip())
        confidences.append(best.confidence)
        language = language or (result.language_code or "").split("-")[0].lower() or None
        words += [Word(w.word, _seconds(w.start_time), _seconds(w.end_time), float(w.confidence))
                  for w in best.words]
    language = language or settings.google_language_code.split("-")[0].lower()
    return Transcript(text=" ".join(t for t in texts if t), language=language,
                      language_prob=float(sum(confidences) / len(confidences)) if confidences else None,
                      avg_logprob=None, words=words, multilingual=True, model=settings.google_model or "default")


class GoogleSpeech(AsrEngine):
    """The service transcribes the audio stage's FLAC bytes at their own rate."""

    name = "google"
    Settings = GoogleSettings
    distributions = ("google-cloud-speech",)

    def check(self, settings: GoogleSettings) -> list[str]:
        try:
            require("google.cloud.speech_v1", "google", "the Google Cloud Speech engine")
        except PrerequisiteError as exc:
            return [str(exc)]
        if not settings.google_endpoint and not os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
            return ["the Google engine needs credentials: set GOOGLE_APPLICATION_CREDENTIALS to a service-account "
                    "key file (https://cloud.google.com/docs/authentication/application-default-credentials)"]
        return []

    def transcribe(self, clip: ClipAudio, settings: GoogleSettings) -> Transcript:
        return transcribe_google(clip.flac, clip.sample_rate, clip.duration_s, settings)
