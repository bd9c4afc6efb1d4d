"""One rank of the 2-process DDP tests: `python -m torch.distributed.run --nproc_per_node 2 ddp_worker.py SHARDS
OUT ENCODER [AUDIO_MODEL]`; with AUDIO_MODEL, the end-to-end config (an in-graph audio encoder) instead of TCMF."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_kebr_train import TINY_ENCODER, ddp_config  # noqa: E402

from kebr_model.training.train import Trainer  # noqa: E402

if __name__ == "__main__":
    TINY_ENCODER["encoder"] = sys.argv[3]
    if len(sys.argv) > 4:
        from test_audio_e2e import e2e

        cfg = e2e(sys.argv[4], encoder=sys.argv[3], batch_size=2, max_steps=2, max_audio_s=0.5, lr_encoder=0.01)
    else:
        cfg = ddp_config()
    trainer = Trainer(cfg, Path(sys.argv[1]), Path(sys.argv[2]))
    assert trainer.world == 2
    trainer.fit()
