"""Constants of the 33-d acoustic recipe (light to import: no librosa)."""

SR = 22050          # Hz
N_FFT = 2048        # samples per frame
HOP = 512           # samples between frames (≈ 43.07 frames per second)
N_MFCC = 20
N_CHROMA = 12
DIM = 1 + N_MFCC + N_CHROMA
RECIPES = ("released", "paper")
