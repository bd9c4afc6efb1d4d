"""Media helpers: the ffmpeg subprocess and FLAC encoding of decoded audio."""
