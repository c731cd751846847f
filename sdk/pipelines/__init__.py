"""Staged pipelines: bundles that run one graph per stage as ONE runner (:mod:`.registry` of kinds,
:mod:`.driver` of stages), and the kinds this kvqe ships, each registered by its own module (:mod:`.sinsr`)."""
from kvqe.sdk.pipelines import sinsr as _sinsr  # noqa: F401 (registers SinSR's kinds)
from kvqe.sdk.pipelines.driver import StagedRunner, Steps, drive
from kvqe.sdk.pipelines.registry import PipelineKind, compose, describe, kinds, register

__all__ = ["PipelineKind", "StagedRunner", "Steps", "compose", "describe", "drive", "kinds", "register"]
