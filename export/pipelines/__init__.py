"""Export plans of pipeline models, one module per model family, each registering the kinds it exports with
:func:`kvqe.export.stage_plan.register_plan`; importing the package registers them all."""
from kvqe.export.pipelines import sinsr as _sinsr  # noqa: F401 (registers SinSR's kinds)
