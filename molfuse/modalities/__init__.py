"""Modality adapters (images, vectors; molecules, proteins): one folder each.

Each subpackage has a ``register()`` that calls :func:`molfuse.plugins.register_modality`
with everything it brings (architectures, data kinds, model kinds, an evaluator with its
YAML schema and metric columns, reports, sample writers); :func:`molfuse.plugins.discover`
imports every subpackage here and calls it. A subpackage imports its heavy dependencies
itself and, when they are missing, raises ImportError naming the extra to install, which
every lookup of that modality repeats. Modalities never import each other
(docs/architecture.md).
"""
