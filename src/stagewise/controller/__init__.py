"""The controller: the only place that combines the pure layers with the drivers."""

from stagewise.controller.controller import Controller, steady_world

__all__ = ["Controller", "steady_world"]
