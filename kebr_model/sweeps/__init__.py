"""`kebr-train sweep`, one module per concern: the grid file and its points (`grid`), one point-seed's run
(`point`), a point's parameter and FLOP counts (`cost`), the mean ± std table (`table`), the plot
(`plot`), and the loop over them (`runner`). Runs go through `kebr_model.training.run.train_run`, as the CLI's."""

from .cost import COST, model_cost, point_cost, trainer_cost
from .grid import CONFIG, Point, Sweep, SweepError, load_sweep, point_name, run_args, toml_value
from .point import RESULT, last_epoch_loss, run_point
from .runner import run_sweep
from .table import aggregate, metric_order, metrics_of

__all__ = ["CONFIG", "COST", "RESULT", "Point", "Sweep", "SweepError", "aggregate", "last_epoch_loss",
           "load_sweep", "metric_order", "metrics_of", "model_cost", "point_cost", "point_name", "run_args",
           "run_point", "run_sweep", "toml_value", "trainer_cost"]
