"""kebr_model: the KEBR model (TCMF fusion + MCC loss) and its trainer, `kebr-train`."""

__version__ = "0.1.0"
