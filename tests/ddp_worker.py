"""One rank of the 2-process DDP test: `python -m torch.distributed.run --nproc_per_node 2 ddp_worker.py SHARDS OUT ENCODER`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_kebr_train import TINY_ENCODER, ddp_config  # noqa: E402

from kebr_model.train import Trainer  # noqa: E402

if __name__ == "__main__":
    TINY_ENCODER["encoder"] = sys.argv[3]
    trainer = Trainer(ddp_config(), Path(sys.argv[1]), Path(sys.argv[2]))
    assert trainer.world == 2
    trainer.fit()
