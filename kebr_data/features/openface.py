"""Parse OpenFace 2.2 `FeatureExtraction` CSVs into the 709-d visual features.

The 709 features are every column after `frame, face_id, timestamp, confidence, success`, in
OpenFace's order: gaze 8, eye landmarks 2D 112, 3D 168, head pose 6, face landmarks 2D 136,
3D 204, PDM parameters 40, AU intensities 17, AU presence 18. Columns are selected by name, so a
CSV whose header lacks any of them fails loudly. Frames where tracking failed (`success = 0`)
still carry stale landmark and pose values in OpenFace's output: they are zeroed and flagged here,
never averaged in. Parsing is vectorised with pyarrow (real CSVs pad names and values with spaces).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

META = ("frame", "face_id", "timestamp", "confidence", "success")
AUS_R = ("01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17", "20", "23", "25", "26", "45")
AUS_C = ("01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17", "20", "23", "25", "26", "28", "45")


def feature_columns() -> tuple[str, ...]:
    """The 709 feature column names of OpenFace 2.2 with -2Dfp -3Dfp -pdmparams -pose -aus -gaze, in order."""
    gaze = [f"gaze_{e}_{a}" for e in (0, 1) for a in "xyz"] + ["gaze_angle_x", "gaze_angle_y"]
    eye2d = [f"eye_lmk_{a}_{i}" for a in "xy" for i in range(56)]
    eye3d = [f"eye_lmk_{a}_{i}" for a in "XYZ" for i in range(56)]
    pose = [f"pose_{p}" for p in ("Tx", "Ty", "Tz", "Rx", "Ry", "Rz")]
    face2d = [f"{a}_{i}" for a in "xy" for i in range(68)]
    face3d = [f"{a}_{i}" for a in "XYZ" for i in range(68)]
    pdm = ["p_scale", "p_rx", "p_ry", "p_rz", "p_tx", "p_ty"] + [f"p_{i}" for i in range(34)]
    aus = [f"AU{a}_r" for a in AUS_R] + [f"AU{a}_c" for a in AUS_C]
    return tuple(gaze + eye2d + eye3d + pose + face2d + face3d + pdm + aus)


FEATURES = feature_columns()
DIM = len(FEATURES)
#: the columns OpenFace leaves out when it has no eye model (it turns -gaze off by itself)
EYE_COLUMNS = frozenset(c for c in FEATURES if c.startswith(("gaze_", "eye_lmk_")))
#: (name, first column, width) of each block, for documentation and tests
BLOCKS = (("gaze", 0, 8), ("eye_landmarks_2d", 8, 112), ("eye_landmarks_3d", 120, 168), ("pose", 288, 6),
          ("face_landmarks_2d", 294, 136), ("face_landmarks_3d", 430, 204), ("pdm_params", 634, 40),
          ("au_intensity", 674, 17), ("au_presence", 691, 18))


class OpenFaceCsvError(ValueError):
    """The CSV is not OpenFace 2.2 FeatureExtraction output with the expected columns."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error


@dataclass
class OpenFaceFrames:
    """One clip's frames: features (T × 709, zero where tracking failed), flags and confidences."""

    features: np.ndarray
    success: np.ndarray
    confidence: np.ndarray
    timestamps: np.ndarray
    other_faces: int = 0

    @property
    def face_ratio(self) -> float:
        return float(self.success.mean()) if self.success.size else 0.0

    def first(self, n: int) -> "OpenFaceFrames":
        """The first `n` frames (all when `n` is 0 or covers them): `visual.max_frames`."""
        if n <= 0 or self.success.size <= n:
            return self
        return OpenFaceFrames(self.features[:n], self.success[:n], self.confidence[:n], self.timestamps[:n],
                              self.other_faces)

    @property
    def fps(self) -> float:
        """Frame rate from the timestamps (0.0 when there are fewer than two frames)."""
        if self.timestamps.size < 2:
            return 0.0
        span = float(self.timestamps[-1] - self.timestamps[0])
        return (self.timestamps.size - 1) / span if span > 0 else 0.0


def parse_openface_csv(data: bytes) -> OpenFaceFrames:
    """Parse the bytes of one FeatureExtraction CSV; raise OpenFaceCsvError if it is not one."""
    if not data.strip():
        raise OpenFaceCsvError("empty_csv", "the OpenFace CSV is empty")
    # OpenFace separates names with ", " and pads values with spaces: strip the names here, and
    # let pyarrow's number parser skip the padding
    end = data.find(b"\n")
    header = data[: end if end >= 0 else len(data)].decode("utf-8", errors="replace")
    names = [h.strip() for h in header.strip().split(",")]
    try:
        table = pacsv.read_csv(io.BytesIO(data), read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
                               convert_options=pacsv.ConvertOptions(
                                   column_types={name: pa.float64() for name in (*META, *FEATURES)}))
    except pa.ArrowInvalid as exc:
        raise OpenFaceCsvError("bad_csv", f"cannot parse the OpenFace CSV: {exc}") from None
    names = set(table.column_names)
    missing = [c for c in (*META, *FEATURES) if c not in names]
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        if set(missing) <= EYE_COLUMNS:
            hint = ("OpenFace wrote no gaze or eye-landmark columns, which it does when its eye model is missing "
                    "(it prints 'WARNING: no eye model found'): reinstall the model/model_eye folder beside "
                    "FeatureExtraction")
        else:
            hint = "run FeatureExtraction 2.2 with -2Dfp -3Dfp -pdmparams -pose -aus -gaze"
        raise OpenFaceCsvError("bad_header", f"the CSV lacks {len(missing)} OpenFace column(s): {shown}; {hint}")
    if table.num_rows == 0:
        raise OpenFaceCsvError("empty_csv", "the OpenFace CSV has a header but no frames")
    face_id = table.column("face_id").to_numpy()
    keep = face_id == face_id.min()
    other = int((~keep).sum())
    cols = [table.column(c).to_numpy()[keep] for c in FEATURES]
    features = np.stack(cols, axis=1).astype(np.float32)
    success = table.column("success").to_numpy()[keep] > 0.5
    features[~success] = 0.0
    return OpenFaceFrames(features, success, table.column("confidence").to_numpy()[keep].astype(np.float32),
                          table.column("timestamp").to_numpy()[keep], other)
