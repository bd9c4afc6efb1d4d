"""The faces stage: the tracking rules against hand-computed values, the detections and crops
against direct OpenCV calls on the same frames, the track choice on real two-face videos, and bad
inputs as rows."""

from __future__ import annotations

import subprocess

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import demo_clip, make_video, run_cli, write_wav

from kebr_data import config
from kebr_data.features import face_tracks as ft
from kebr_data.media.video_frames import source_index
from kebr_data.stages.base import ClipInput, ShardContext
from kebr_data.stages.faces import CASCADE, FacesStage

# --- the rules, by hand --------------------------------------------------------------------------


def test_iou_by_hand():
    assert ft.iou(np.array([0, 0, 10, 10]), np.array([5, 0, 10, 10])) == pytest.approx(50 / 150)
    assert ft.iou(np.array([0, 0, 10, 10]), np.array([20, 20, 5, 5])) == 0.0
    assert ft.iou(np.array([0, 0, 4, 4]), np.array([0, 0, 4, 4])) == 1.0


def test_linker_follows_overlaps_bridges_gaps_and_starts_new_tracks():
    link = ft.TrackLinker(iou_min=0.3, max_gap=1)
    assert link.add(0, np.array([[0, 0, 10, 10], [50, 0, 10, 10]])) == [0, 1]
    assert link.add(1, np.array([[52, 0, 10, 10], [1, 0, 10, 10]])) == [1, 0]  # each to its best overlap
    assert link.add(2, np.empty((0, 4))) == []
    assert link.add(3, np.array([[2, 0, 10, 10]])) == [0]  # one missed frame is bridged (max_gap 1)
    assert link.add(6, np.array([[2, 0, 10, 10]])) == [2]  # two missed frames end track 0
    assert [t.frames for t in link.tracks] == [[0, 1, 3], [0, 1], [6]]


def test_largest_is_the_greatest_area_sum_first_on_ties():
    a = ft.Track([0, 1, 2], [np.array([0, 0, 10, 10])] * 3)  # 300
    b = ft.Track([0], [np.array([0, 0, 15, 15])])  # 225
    c = ft.Track([0, 1, 2], [np.array([0, 0, 10, 10])] * 3)  # 300 again
    assert ft.largest([b, a, c]) == 1 and ft.largest([]) == -1


def test_pearson_and_frame_energy_by_hand():
    assert ft.pearson(np.array([1, 2, 3]), np.array([2, 4, 6])) == pytest.approx(1.0)
    assert ft.pearson(np.array([1, 2, 3]), np.array([1, 0, 1])) == pytest.approx(0.0)
    assert ft.pearson(np.array([1, 2]), np.array([1, 2])) is None
    assert ft.pearson(np.array([1, 1, 1]), np.array([1, 2, 3])) is None
    samples = np.array([0, 0, 3, 4, 0, 0, 0, 0], np.float32)  # sr 4, fps 1: windows [-2,2), [2,6), [6,10)
    assert np.allclose(ft.frame_energy(samples, 4, 1.0, 3), [0.0, np.sqrt(25 / 4), 0.0])


def test_speaker_picks_the_best_defined_correlation():
    energy = np.array([0.0, 1.0, 0.0, 1.0, 0.0])
    motion = {0: {1: 0.1, 2: 0.9, 3: 0.1, 4: 0.9}, 1: {1: 0.9, 2: 0.1, 3: 0.9, 4: 0.1}, 2: {1: 5.0, 2: 5.0}}
    best = ft.speaker(motion, energy)
    assert best[0] == 1 and best[1] == pytest.approx(1.0)
    assert ft.speaker({0: {1: 1.0, 2: 1.0, 3: 1.0}}, energy) is None


def test_mouth_box_and_crop_boxes_by_hand():
    assert ft.mouth_box(np.array([10, 20, 40, 60])) == (20, 60, 40, 80)
    track = ft.Track([2, 4], [np.array([0, 0, 10, 10]), np.array([20, 0, 10, 20])])
    first, geo, detected = ft.crop_boxes(track, smooth=1, scale=2.0)
    assert first == 2 and detected.tolist() == [True, False, True]
    assert np.allclose(geo, [[5, 5, 20], [15, 7.5, 30], [25, 10, 40]])  # centre, 2 × larger side, gap interpolated
    _, smooth, _ = ft.crop_boxes(track, smooth=3, scale=1.0)  # edges repeated: (5,5,15) (5,15,25) (15,25,25)
    assert np.allclose(smooth[:, 0], [25 / 3, 15, 65 / 3])


def test_source_frame_of_each_sampled_time():
    assert [source_index(k, 10.0, 25.0) for k in range(6)] == [0, 2, 5, 7, 10, 12]
    assert [source_index(k, 10.0, 5.0) for k in range(4)] == [0, 0, 1, 1]  # slower sources repeat frames


# --- against OpenCV called directly ----------------------------------------------------------------


def faces_stage(**overrides) -> FacesStage:
    return FacesStage(config.load(overrides=[f"faces.{k}={v!r}" for k, v in overrides.items()])["faces"])


def run_one(stage: FacesStage, video, tmp_path, audio=None) -> dict:
    clip = ClipInput("c", {"video_path": str(video)}, {"audio": audio} if audio else {})
    return stage._clip_row(clip, ShardContext(0, {}, tmp_path))


def direct_frames(path, fps=10.0):
    """Every frame decoded with a plain VideoCapture loop, then the ones shown at k / fps."""
    cap = cv2.VideoCapture(str(path))
    src_fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    picked, k = [], 0
    while int(np.floor(k * src_fps / fps + 1e-6)) < len(frames):
        picked.append(frames[int(np.floor(k * src_fps / fps + 1e-6))])
        k += 1
    return picked


def test_detections_and_crops_equal_direct_opencv_calls(tmp_path):
    video = demo_clip(0)
    r = run_one(faces_stage(), video, tmp_path)
    assert r["status"] == "ok", r
    frames = direct_frames(video)
    detector = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
    direct = [detector.detectMultiScale(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), scaleFactor=1.1, minNeighbors=5,
                                        minSize=(19, 19)) for f in frames]  # 0.1 × 192 px
    assert r["num_sampled"] == len(frames) and r["num_tracks"] == 1
    assert all(len(d) == 1 for d in direct) and r["face_ratio"] == 1.0
    track = ft.Track(list(range(len(frames))), [d[0].astype(np.float64) for d in direct])
    _, geo, _ = ft.crop_boxes(track, smooth=5, scale=1.25)
    assert len(r["crops"]) == len(frames)
    for k in (0, len(frames) // 2, len(frames) - 1):
        cx, cy, side = geo[k]
        s = 128 / side
        m = np.array([[s, 0, 64 - s * cx], [0, s, 64 - s * cy]])
        want = cv2.warpAffine(frames[k], m, (128, 128), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        assert r["crops"][k] == cv2.imencode(".jpg", want, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
        x, y, w = r["boxes"][k]
        assert (x, y, w) == (round(cx - side / 2), round(cy - side / 2), round(side))
    image = cv2.imdecode(np.frombuffer(r["crops"][0], np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (128, 128, 3)
    assert len(detector.detectMultiScale(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), 1.1, 5)) == 1  # a face


N_FRAMES = 40


def talking_pair(ffmpeg, dest, rng):
    """Two copies of the demo's first frame side by side at 10 fps; each copy's mouth region gets fresh
    noise (it "moves") on the frames its own random on/off sequence says it speaks. Returns (path, left
    sequence, right sequence, mouth boxes)."""
    cap = cv2.VideoCapture(str(demo_clip(0)))
    frame = cap.read()[1]
    cap.release()
    (box,) = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE).detectMultiScale(
        cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), 1.1, 5)
    x0, y0, x1, y1 = ft.mouth_box(box)
    talk = rng.random((2, N_FRAMES)) < 0.5
    frames = []
    for k in range(N_FRAMES):
        halves = []
        for side in range(2):
            img = frame.copy()
            if talk[side, k]:
                noise = rng.integers(-60, 60, (y1 - y0, x1 - x0, 3))
                img[y0:y1, x0:x1] = np.clip(img[y0:y1, x0:x1].astype(int) + noise, 0, 255).astype(np.uint8)
            halves.append(img)
        frames.append(np.hstack(halves))
    h, w = frames[0].shape[:2]
    subprocess.run([ffmpeg, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}",
                    "-r", "10", "-i", "pipe:0", "-c:v", "libx264", "-crf", "12", "-pix_fmt", "yuv420p", str(dest)],
                   input=np.stack(frames).tobytes(), check=True)
    return dest, talk[0], talk[1]


def speech_like(talk: np.ndarray) -> dict:
    """An audio row whose energy is loud in the 0.1 s around each frame where `talk` is on."""
    import io

    import soundfile as sf

    sr = 16000
    gain = np.repeat(np.where(talk, 0.5, 0.01), sr // 10)[sr // 20:]  # sample s belongs to frame round(s / 1600)
    y = (np.sin(2 * np.pi * 220 * np.arange(gain.size) / sr) * gain).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="FLAC", subtype="PCM_16")
    return {"status": "ok", "flac": buf.getvalue()}


def test_speaker_picks_the_face_whose_mouth_moves_with_the_audio(tmp_path, ffmpeg):
    video, left, right = talking_pair(ffmpeg, tmp_path / "pair.mp4", np.random.default_rng(3))
    largest = run_one(faces_stage(), video, tmp_path)
    assert largest["status"] == "ok" and largest["num_tracks"] == 2 and largest["speaker_corr"] is None
    for talk, on_right in ((right, True), (left, False)):
        r = run_one(faces_stage(selection="speaker"), video, tmp_path, speech_like(talk))
        assert r["status"] == "ok" and r["speaker_corr"] > 0.3, r["speaker_corr"]
        assert (r["boxes"][0][0] >= 192 - 20) == on_right
    without_audio = run_one(faces_stage(selection="speaker"), video, tmp_path, {"status": "skipped"})
    assert without_audio["message"] == "no audio: the largest face was chosen"
    assert without_audio["crops"] == largest["crops"]


def test_a_video_longer_than_max_duration_is_skipped_before_decoding(tmp_path):
    r = run_one(faces_stage(max_duration_s=1.0), demo_clip(0), tmp_path)
    assert (r["status"], r["error"]) == ("skipped", "too_long") and "faces.max_duration_s = 1" in r["message"]


# --- bad inputs, through the CLI ------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory, ffmpeg):
    src = tmp_path_factory.mktemp("bad") / "src"
    src.mkdir()
    write_wav(src / "audio_only.wav", 1.0)
    make_video(ffmpeg, src / "no_face.mp4", seconds=1.0)
    make_video(ffmpeg, src / "video_only.mp4", seconds=1.0, audio=False)
    subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(demo_clip(1)), "-t", "0.2", "-c:v", "libx264", "-c:a",
                    "aac", str(src / "short.mp4")], check=True)
    subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(demo_clip(1)), "-an", "-c:v", "copy",
                    str(src / "face_no_audio.mp4")], check=True)
    (src / "truncated.mp4").write_bytes(demo_clip(0).read_bytes()[:2000])
    out = src.parent / "out"
    proc = run_cli("extract", "--src", str(src), "--out", str(out), "--layout", "folder", "--stages",
                   "index,audio,faces", "--max-failed", "1", "--workers", "1")
    return out, proc


@pytest.mark.slow
@pytest.mark.parametrize("clip,status,error", [
    ("audio_only", "skipped", "no_video"),
    ("no_face", "skipped", "no_face"),
    ("video_only", "skipped", "no_face"),
    ("short", "ok", None),
    ("face_no_audio", "ok", None),
    ("truncated", "failed", "no_frames"),
])
def test_bad_inputs_are_rows(bad_run, clip, status, error):
    out, proc = bad_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["clip_id"]: r for r in pq.read_table(out / "faces").to_pylist()}
    r = rows[clip]
    assert (r["status"], r["error"]) == (status, error), r["message"]
    if status != "ok":
        assert r["message"]
    if clip == "short":
        assert r["num_sampled"] == 2 and len(r["crops"]) == r["num_frames"] >= 1
