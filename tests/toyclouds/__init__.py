"""A modality that lives only under tests/: variable-size 3-D point clouds of two shapes.

It proves that a modality plugs in by writing one folder: ``register()`` adds an
architecture (``cloud_mlp``), a data kind (``toy_clouds``: rings and rods of 4-7 points,
padded to 8, centred), an evaluator with its own ``evaluation:`` schema and metric columns
(shape shares read from the cloud's covariance) and an ``.xyz`` sample writer. Nothing
outside this folder knows it.
"""

from __future__ import annotations

from molfuse import plugins

from .data import toy_clouds
from .evaluate import EVALUATOR, write_xyz
from .net import CloudMLP

MODALITY = plugins.Modality(
    name="toyclouds", description="rings and rods of 4-7 points in 3-D (a test modality)",
    architectures={"cloud_mlp": CloudMLP},
    data_kinds={"toy_clouds": plugins.DataKind(toy_clouds, {"shape": "ring", "n": 256, "seed": 0,
                                                           "sizes": [4, 5, 6, 7], "max_nodes": 8,
                                                           "radius_property": False})},
    evaluator=EVALUATOR, writers={"xyz": write_xyz})


def register() -> None:
    plugins.register_modality(MODALITY)
