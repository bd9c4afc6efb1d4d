"""kebr_data: the KEBR data pipeline (index, audio, asr, mask, acoustic, visual, export)."""

__version__ = "0.1.0"
